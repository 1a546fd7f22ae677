"""The best server configuration: the highest QPS LoadGen calls VALID at the latency bound, over batch policies.

Per policy, a bisection on the target QPS between what is already known to be met and the policy's
offline throughput (no arrival process can be served faster than the SUT serves a full queue). Policies
run in order of their offline throughput, best first; a policy whose offline throughput does not beat the
best VALID QPS found so far is pruned without a server run, and a policy that cannot serve the best QPS
plus ``rel_tol`` is dropped after that one probe. The whole search stops when the next trial would
pass ``budget_s``; it then reports the best found so far and says that the budget ended it.

Nothing here knows LoadGen: the trials are functions, so the search is tested on a known answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from infertune.scenario.settings import BatchPolicy


@dataclass(frozen=True)
class ServerPoint:
    """One server trial: the policy, the target QPS, LoadGen's verdict and the p99 it saw."""

    policy: BatchPolicy
    target_qps: float
    valid: bool
    p99_ms: float | None = None


@dataclass
class SearchOutcome:
    """What the search found: the best VALID point (None when nothing met the bound) and every trial."""

    best: ServerPoint | None
    points: list[ServerPoint] = field(default_factory=list)
    #: the offline throughput of each policy tried (the bisection's upper end).
    upper_bounds: dict[BatchPolicy, float] = field(default_factory=dict)
    #: policies skipped, with why.
    pruned: list[tuple[BatchPolicy, str]] = field(default_factory=list)
    stopped_by_budget: bool = False
    elapsed_s: float = 0.0

    def closest(self) -> ServerPoint | None:
        """When nothing met the bound: the trial with the lowest p99 (the best found)."""
        measured = [p for p in self.points if p.p99_ms is not None]
        return min(measured, key=lambda p: (p.p99_ms, -p.target_qps)) if measured else None

    def message(self, bound_ms: float) -> str:
        """One paragraph for the user: the answer, or why there is none and the best found."""
        budget = " (the search budget ended it; raise --search-budget-s for a finer answer)" if self.stopped_by_budget else ""
        if self.best is not None:
            return (f"best server configuration: {self.best.policy.label} serves {self.best.target_qps:.1f} QPS "
                    f"with p99 {self.best.p99_ms:.2f} ms <= {bound_ms:g} ms (LoadGen: VALID), after "
                    f"{len(self.points)} server trials in {self.elapsed_s:.0f} s{budget}")
        near = self.closest()
        if near is None:
            return f"no server trial ran within the budget{budget}"
        return (f"no configuration met p99 <= {bound_ms:g} ms at any QPS tried ({len(self.points)} trials); the "
                f"best found: {near.policy.label} at {near.target_qps:.2f} QPS had p99 {near.p99_ms:.2f} ms. "
                f"Raise --latency-bound-ms, or try a faster variant or smaller max_batch / max_delay_ms{budget}")


def trials_per_policy(rel_tol: float) -> int:
    """The most server trials one policy gets: a bisection to ``rel_tol``, and a few more halvings for a
    policy that meets the bound only far below its offline throughput (or never)."""
    return math.ceil(math.log2(1 / rel_tol)) + 3


def plan_trials(policies: int, rel_tol: float) -> int:
    """The most trials the search runs: per policy an offline run and its bisection."""
    return policies * (1 + trials_per_policy(rel_tol))


def search_server(policies: Sequence[BatchPolicy], offline_qps: Callable[[BatchPolicy], float],
                  server_trial: Callable[[BatchPolicy, float], ServerPoint], budget_s: float | None = None,
                  trial_s: float | Callable[[float], float] = 10.0, rel_tol: float = 0.05, floor_qps: float = 0.0,
                  clock: Callable[[], float] = time.monotonic) -> SearchOutcome:
    """Search the best policy and its highest VALID QPS (see the module docstring).

    Args:
        policies: the batch policies to try.
        offline_qps: a policy's offline throughput (samples/s), the upper end of its bisection.
        server_trial: runs LoadGen's server scenario for a policy at a target QPS.
        budget_s: stop before a trial that would end later than this (None: no limit).
        trial_s: the expected length of a trial, or a function of its target QPS (a trial lasts until both
            LoadGen's minimum duration and minimum query count are met: long at a low rate).
        rel_tol: stop a bisection when its bracket is narrower than this fraction of its upper end.
        floor_qps: a VALID QPS already found elsewhere (another variant): only better answers count.
    """
    start = clock()
    out = SearchOutcome(best=None)
    expected_s = trial_s if callable(trial_s) else (lambda qps: float(trial_s))

    def time_left(qps: float = float("inf")) -> bool:
        if budget_s is not None and clock() - start + expected_s(qps) > budget_s:
            out.stopped_by_budget = True
            return False
        return True

    def run(policy: BatchPolicy, qps: float) -> ServerPoint:
        point = server_trial(policy, qps)
        out.points.append(point)
        if point.valid and (out.best is None or point.target_qps > out.best.target_qps):
            out.best = point
        return point

    uppers: dict[tuple[int, int], float] = {}  # offline throughput does not depend on the delay
    for policy in policies:
        key = (policy.max_batch, policy.instances)
        if key not in uppers:
            if not time_left():
                break
            uppers[key] = offline_qps(policy)
        out.upper_bounds[policy] = uppers[key]
    for policy in sorted(out.upper_bounds, key=lambda p: -out.upper_bounds[p]):
        upper = out.upper_bounds[policy]
        best_q = max(floor_qps, out.best.target_qps if out.best else 0.0)
        if upper <= best_q * (1 + rel_tol):
            out.pruned.append((policy, f"offline throughput {upper:.1f}/s cannot beat {best_q:.1f} QPS"))
            continue
        lo, hi = best_q, upper
        qps = lo * (1 + rel_tol) if lo > 0 else hi / 2
        for _ in range(trials_per_policy(rel_tol)):
            if not time_left(qps):
                break
            point = run(policy, qps)
            if point.valid:
                lo = qps
            elif lo == best_q and best_q > 0:
                out.pruned.append((policy, f"not VALID at {qps:.1f} QPS, just above the best found"))
                break
            else:
                hi = qps
            if hi - lo <= rel_tol * hi:
                break
            qps = (lo + hi) / 2
    out.elapsed_s = clock() - start
    return out
