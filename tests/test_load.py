"""The busy-machine rule (measure/load.py), driven by fake /proc/stat readings: no real load needed."""

from __future__ import annotations

import os

import pytest

from infertune.measure.load import BUSY_MARGIN_CORES, LoadMeter, between, snapshot

HZ = os.sysconf("SC_CLK_TCK")


def _stat(user: float, idle: float, steal: float = 0.0, cores: int = 2) -> str:
    """A /proc/stat whose aggregate line holds these many seconds of user, idle and steal time."""
    ticks = [user * HZ, 0, 0, idle * HZ, 0, 0, 0, steal * HZ, 0, 0]
    per_cpu = "\n".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0" for i in range(cores))
    return "cpu  " + " ".join(str(int(t)) for t in ticks) + "\n" + per_cpu + "\nintr 0\n"


def _snap(user: float, idle: float, own: float, steal: float = 0.0, cores: int = 2):  # noqa: ANN202
    return snapshot(lambda: _stat(user, idle, steal, cores), lambda: own, lambda: "0.50 0.40 0.30 1/100 1")


def test_quiet_machine_is_not_busy() -> None:
    # 10 s on 2 cores = 20 core-seconds; this process used 19.9 of the 20 busy ones
    load = between(_snap(0, 0, own=0), _snap(20, 0, own=19.9), threads=2)
    assert load is not None and not load.busy
    assert load.other_cpu_cores == pytest.approx(0.01, abs=1e-3)


def test_other_work_on_our_cores_is_busy() -> None:
    # others took 5 of 20 core-seconds: half a core, on a machine whose two cores the cell needs
    load = between(_snap(0, 0, own=0), _snap(19, 1, own=14), threads=2)
    assert load is not None and load.busy
    assert load.other_cpu_cores == pytest.approx(0.5)
    assert "0.50 cores" in load.describe()


def test_other_work_on_free_cores_is_not_busy() -> None:
    # 16 cores, the cell uses 2: 10 other cores busy still leave it its own
    load = between(_snap(0, 0, own=0, cores=16), _snap(120, 40, own=20, cores=16), threads=2)
    assert load is not None and not load.busy
    assert load.other_cpu_cores == pytest.approx(10.0)


def test_margin_is_the_boundary() -> None:
    below = between(_snap(0, 0, own=0), _snap(10, 10, own=10 - 10 * (BUSY_MARGIN_CORES - 0.05)), threads=2)
    above = between(_snap(0, 0, own=0), _snap(10, 10, own=10 - 10 * (BUSY_MARGIN_CORES + 0.05)), threads=2)
    assert below is not None and above is not None
    assert not below.busy and above.busy


def test_steal_alone_makes_it_busy() -> None:
    load = between(_snap(0, 0, own=0), _snap(18, 0, own=18, steal=2), threads=2)
    assert load is not None and load.busy
    assert load.steal_fraction == pytest.approx(0.1)
    assert "stole 10%" in load.describe()


def test_unreadable_proc_records_nothing() -> None:
    def fail() -> str:
        raise OSError("no /proc here")

    assert snapshot(fail) is None
    assert between(None, _snap(1, 1, own=0), threads=1) is None


def test_real_meter_reads_this_machine() -> None:
    meter = LoadMeter()
    meter.start()
    sum(i * i for i in range(200_000))  # some work of our own, so the interval is not empty
    load = meter.stop(threads=1)
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat on this system: the meter records nothing by design")
    assert load is None or load.other_cpu_cores >= 0.0
