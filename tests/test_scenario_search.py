"""The server search on systems with a known answer: it converges on the best policy's capacity, prunes
what cannot win, stops at the budget, and says clearly when nothing meets the bound."""

from __future__ import annotations

import pytest

from infertune.scenario.search import ServerPoint, plan_trials, search_server
from infertune.scenario.settings import BatchPolicy

B1, B4, B8 = BatchPolicy(1, 0.0, 1), BatchPolicy(4, 2.0, 1), BatchPolicy(8, 2.0, 2)
#: the QPS each policy can serve within the bound (a trial is VALID at or below it).
CAPACITY = {B1: 100.0, B4: 310.0, B8: 520.0}


class System:
    """VALID iff the target QPS is within the policy's capacity; offline throughput 25% above it."""

    def __init__(self, capacity: dict[BatchPolicy, float], bound_ms: float = 100.0) -> None:
        self.capacity = capacity
        self.bound_ms = bound_ms
        self.server_calls: list[tuple[BatchPolicy, float]] = []

    def offline(self, policy: BatchPolicy) -> float:
        return self.capacity[policy] * 1.25

    def server(self, policy: BatchPolicy, qps: float) -> ServerPoint:
        self.server_calls.append((policy, qps))
        ok = qps <= self.capacity[policy]
        return ServerPoint(policy, qps, ok, p99_ms=self.bound_ms * (0.5 if ok else 3.0))


def test_converges_on_the_best_policy_capacity():
    system = System(CAPACITY)
    out = search_server([B1, B4, B8], system.offline, system.server, rel_tol=0.02)
    assert out.best is not None and out.best.policy == B8
    assert CAPACITY[B8] * 0.98 <= out.best.target_qps <= CAPACITY[B8]
    assert len(out.points) <= plan_trials(3, 0.02)


def test_a_policy_whose_offline_throughput_cannot_win_gets_no_server_run():
    system = System(CAPACITY)
    out = search_server([B1, B4, B8], system.offline, system.server, rel_tol=0.05)
    # B1's offline throughput (125/s) is below the best VALID QPS found on B8 first: never tried
    assert B1 not in {p for p, _ in system.server_calls}
    assert any(p == B1 and "cannot beat" in why for p, why in out.pruned)


def test_floor_from_another_variant_prunes_everything_slower():
    system = System(CAPACITY)
    out = search_server([B1, B4], system.offline, system.server, floor_qps=1000.0)
    assert out.best is None and not system.server_calls
    assert len(out.pruned) == 2


def test_budget_stops_the_search_and_keeps_the_best_so_far():
    system = System(CAPACITY)
    now = [0.0]

    def server(policy, qps):
        now[0] += 10.0  # each trial takes 10 s of the fake clock
        return system.server(policy, qps)

    out = search_server([B1, B4, B8], system.offline, server, budget_s=45.0, trial_s=10.0, clock=lambda: now[0])
    assert out.stopped_by_budget
    assert len(out.points) == 4  # the fifth would end at 50 s
    assert out.best is not None and out.best.target_qps <= CAPACITY[B8]
    assert "budget" in out.message(100.0)


def test_unmeetable_bound_says_so_with_the_best_found():
    system = System({B1: 0.0, B4: 0.0})
    out = search_server([B1, B4], lambda p: 50.0, system.server, rel_tol=0.1)
    assert out.best is None
    text = out.message(5.0)
    assert "no configuration met p99 <= 5 ms" in text
    near = out.closest()
    assert near is not None and near.policy.label in text
    assert len(out.points) <= plan_trials(2, 0.1)


@pytest.mark.parametrize("rel_tol", [0.2, 0.05, 0.01])
def test_bisection_tightens_with_rel_tol(rel_tol):
    system = System({B4: 310.0})
    out = search_server([B4], system.offline, system.server, rel_tol=rel_tol)
    assert out.best is not None and 310.0 * (1 - 2 * rel_tol) <= out.best.target_qps <= 310.0


def test_budget_counts_the_longer_trials_at_low_rates():
    # a trial lasts until LoadGen's minimum query count is met: 700 queries at 6.25 QPS take 112 s
    system = System({B1: 10.0})
    now = [0.0]

    def server(policy, qps):
        now[0] += 700 / qps
        return system.server(policy, qps)

    out = search_server([B1], system.offline, server, budget_s=150.0, trial_s=lambda qps: 700 / qps,
                        clock=lambda: now[0])
    assert out.stopped_by_budget
    assert now[0] <= 150.0  # never started a trial it could not finish within the budget
    # offline 12.5/s: the first probe at 6.25 QPS (112 s) fits; the next at 9.4 QPS (75 s more) would not
    assert [round(p.target_qps, 2) for p in out.points] == [6.25]
