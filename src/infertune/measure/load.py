"""How busy the machine was while a cell was timed: other processes' CPU use and hypervisor steal.

On a shared machine a variant can be steadily slow while it is measured (so its spread is small and the
noise flag stays off) and the run then names a wrong winner. So the timed loop of every cell is bracketed
by two readings of ``/proc/stat`` (the busy and stolen CPU time of the whole machine) and of this
process's own CPU time: what the machine spent beyond this process is other processes' work.

The rules (docs/measurement.md): a cell was measured on a **busy** machine when other processes used more
CPU than the cores this cell left free, by more than ``BUSY_MARGIN_CORES`` (on a 2-core machine timing
with 2 threads: any other work above a quarter of a core; a GPU cell leaves free all but the cores it used
itself), or when the hypervisor stole more than
``STEAL_BUSY`` of the machine's time. On machines without ``/proc/stat`` nothing is recorded.
The baseline is timed again, briefly and without verifying it again (``recheck_policy``), at the end of
the run; when that p50 lies further from the first than
``DRIFT_MIN`` or twice the baseline's own spread (IQR/median), whichever is larger, the machine changed
during the run and every speedup of that batch size says so. A speedup is flagged when its own row or
its baseline's was timed on a busy machine, or its baseline drifted.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infertune.measure.timer import TimingPolicy

if TYPE_CHECKING:
    from infertune.results import ResultRow

#: other processes' CPU use (in cores) beyond the cores a cell leaves free, above which it was busy.
BUSY_MARGIN_CORES = 0.25
#: a timed loop shorter than this many clock ticks of /proc/stat (10 ms each, usually) is too short to judge.
MIN_TICKS = 10
#: share of the machine's time stolen by the hypervisor above which a cell was busy.
STEAL_BUSY = 0.05

#: the baseline's end-of-run p50 may differ from its first by this much (or twice its spread) unflagged.
DRIFT_MIN = 0.05
#: the end-of-run check times the baseline briefly: this many timed calls at least, for at least this long.
RECHECK_MIN_ITERATIONS = 5
RECHECK_MIN_TIME_S = 0.5


def recheck_policy(policy: TimingPolicy) -> TimingPolicy:
    """The run's timing policy, shortened for the end-of-run check of the baseline: its p50 only has to
    show a drift beyond ``DRIFT_MIN`` (5 calls' median does), not to stand as a measurement itself. The
    cell's first call is its one warm-up call (a slow second call would be one sample of five)."""
    return dataclasses.replace(
        policy, warmup_iterations=min(policy.warmup_iterations, 1),
        min_iterations=min(policy.min_iterations, RECHECK_MIN_ITERATIONS),
        min_time_s=min(policy.min_time_s, RECHECK_MIN_TIME_S))

_STAT = Path("/proc/stat")
_LOADAVG = Path("/proc/loadavg")


@dataclass(frozen=True)
class CpuSnapshot:
    """The machine's CPU counters and this process's CPU time at one moment (seconds)."""

    busy_s: float
    steal_s: float
    total_s: float
    own_cpu_s: float
    cores: int
    load_avg_1m: float


@dataclass(frozen=True)
class MachineLoad:
    """What other processes and the hypervisor took while a cell was timed."""

    other_cpu_cores: float
    steal_fraction: float
    load_avg_1m: float
    busy: bool

    def describe(self) -> str:
        """'other processes used 1.3 cores, 8% stolen': what a user reads next to a busy cell."""
        parts = [f"other processes used {self.other_cpu_cores:.2f} cores"]
        if self.steal_fraction >= 0.005:
            parts.append(f"the hypervisor stole {self.steal_fraction:.0%} of the CPU time")
        return ", ".join(parts) + f" (load average {self.load_avg_1m:.2f})"


def snapshot(stat_text: Callable[[], str] | None = None, own_cpu_s: Callable[[], float] | None = None,
             loadavg_text: Callable[[], str] | None = None) -> CpuSnapshot | None:
    """Read the counters now; None where ``/proc/stat`` cannot be read. The readers are seams for tests."""
    try:
        stat = (stat_text or _STAT.read_text)()
        load = (loadavg_text or _LOADAVG.read_text)()
    except OSError:
        return None
    lines = stat.splitlines()
    total = next((ln.split()[1:] for ln in lines if ln.startswith("cpu ")), None)
    if total is None:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (float(v) for v in (total + ["0"] * 8)[:8])
    hz = float(os.sysconf("SC_CLK_TCK"))
    cores = sum(1 for ln in lines if ln.startswith("cpu") and ln[3:4].isdigit())
    return CpuSnapshot(
        busy_s=(user + nice + system + irq + softirq) / hz,
        steal_s=steal / hz,
        total_s=(user + nice + system + idle + iowait + irq + softirq + steal) / hz,
        own_cpu_s=(own_cpu_s or _own_cpu_s)(),
        cores=max(cores, 1),
        load_avg_1m=float(load.split()[0]),
    )


def between(before: CpuSnapshot | None, after: CpuSnapshot | None, threads: int | None) -> MachineLoad | None:
    """The load over the interval between two snapshots, judged for a cell timed with ``threads`` threads.

    ``threads`` None: the cell needs the cores it used itself, at least one (a GPU cell: its host work is
    one launching thread, whatever the intra-op thread count, and another process on the other cores of a
    16-core machine does not slow it). Intervals shorter than ``MIN_TICKS`` clock ticks get no verdict:
    ``/proc/stat`` counts in ticks, so one tick of anyone's work in a 20 ms window reads as half a core.
    """
    if before is None or after is None:
        return None
    total = after.total_s - before.total_s
    wall_core_s = total / after.cores  # the interval's length, as /proc/stat counts it
    if wall_core_s * os.sysconf("SC_CLK_TCK") < MIN_TICKS:
        return None
    own = after.own_cpu_s - before.own_cpu_s
    other = max(0.0, (after.busy_s - before.busy_s) - own) / wall_core_s
    steal = max(0.0, after.steal_s - before.steal_s) / total
    needed = threads if threads is not None else max(1, math.ceil(own / wall_core_s - BUSY_MARGIN_CORES))
    free_cores = max(0, after.cores - needed)
    busy = other > free_cores + BUSY_MARGIN_CORES or steal > STEAL_BUSY
    return MachineLoad(other_cpu_cores=other, steal_fraction=steal, load_avg_1m=after.load_avg_1m, busy=busy)


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class LoadMeter:
    """Brackets an interval: ``start()`` then ``stop(threads)`` gives the ``MachineLoad`` over it."""

    def __init__(self) -> None:
        self._before: CpuSnapshot | None = None

    def start(self) -> None:
        self._before = snapshot()

    def stop(self, threads: int | None) -> MachineLoad | None:
        return between(self._before, snapshot(), threads)

    @property
    def load_avg_before(self) -> float | None:
        return self._before.load_avg_1m if self._before is not None else None


def row_fields(load: MachineLoad | None, load_avg_before: float | None) -> dict[str, float | bool | None]:
    """A cell's ``ResultRow`` fields for the load over its timed loop (empty where nothing could be read)."""
    if load is None:
        return {}
    return {"other_cpu_cores": round(load.other_cpu_cores, 3), "cpu_steal_pct": round(100 * load.steal_fraction, 2),
            "load_avg_1m_before": load_avg_before, "load_avg_1m_after": load.load_avg_1m, "machine_busy": load.busy}


def baseline_drift(base: ResultRow) -> float | None:
    """How far the baseline's end-of-run p50 lies from its first (+0.12: 12% slower at the end); None if not re-timed."""
    if not base.recheck_p50_ms or not base.latency_p50_ms:
        return None
    return base.recheck_p50_ms / base.latency_p50_ms - 1.0


def drift_limit(base: ResultRow) -> float:
    """The drift the baseline may show without flagging: its own spread twice, at least ``DRIFT_MIN``."""
    return max(DRIFT_MIN, 2.0 * (base.iqr_over_median or 0.0))


def speedup_caveats(row: ResultRow, base: ResultRow) -> list[str]:
    """Why ``row``'s speedup over ``base`` (its baseline row) is not to be trusted; empty when nothing is known."""
    caveats = []
    if row.machine_busy:
        caveats.append("the machine was busy while this variant was timed")
    if base.machine_busy and base is not row:
        caveats.append("the machine was busy while the baseline was timed")
    drift = baseline_drift(base)
    if drift is not None and abs(drift) > drift_limit(base):
        caveats.append(f"the baseline drifted {drift:+.0%} between the start and the end of the run")
    return caveats
