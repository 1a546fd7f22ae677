"""LoadGen plumbing with a sleep-based runner of known service time: every scenario runs through MLPerf
LoadGen's own bindings, gives a verdict, keeps LoadGen's logs, and rows say what LoadGen saw."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("mlperf_loadgen", reason="MLPerf LoadGen is not installed: pip install 'infertune[serving]'")

from infertune.scenario.loadgen_log import DETAIL_LOG, SUMMARY_LOG
from infertune.scenario.records import RowIdentity
from infertune.scenario.serve import ServingPlan, serve_variant
from infertune.scenario.session import ServingSession
from infertune.scenario.settings import BatchPolicy, TrialSettings
from infertune.scenario.sut import run_trial
from tests.scenario_fakes import SleepRunner, identity_samples

IDENTITY = RowIdentity(model="fake", variant="sleep:fp32", backend="sleep", precision="fp32", device="cpu")
#: short LoadGen runs: 0.2 s at least, and enough queries for LoadGen's early stopping at p99 (662).
SHORT = TrialSettings("server", min_duration_ms=200, min_query_count=700, latency_bound_ms=50.0, sample_count=32)


def _session(tmp_path: Path, fixed_ms: float = 0.5, per_sample_ms: float = 0.05) -> ServingSession:
    return ServingSession(lambda batch, threads: SleepRunner(batch, fixed_ms, per_sample_ms), identity_samples(32),
                          "cpu", threads=2, log_root=tmp_path / "loadgen", label="sleep:fp32")


def test_server_trial_valid_under_light_load_with_logs_kept(tmp_path):
    policy = BatchPolicy(8, 2.0, 1)
    out = run_trial(replace(SHORT, target_qps=1000.0), policy,
                    _session(tmp_path).instances(policy), tmp_path / "trial")
    assert out.result.verdict == "VALID", out.result.reasons
    assert out.result.latency_p99_ms is not None and out.result.latency_p99_ms < 50.0
    assert max(out.batches.histogram()) <= 8
    assert sum(s * c for s, c in out.batches.histogram().items()) == out.result.query_count
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == sorted([DETAIL_LOG, SUMMARY_LOG])


def test_server_trial_over_capacity_is_invalid_with_reasons(tmp_path):
    # one instance, batch 1, 5 ms per sample: at most 200 samples/s; asked for 600
    policy = BatchPolicy(1, 0.0, 1)
    session = _session(tmp_path, fixed_ms=5.0, per_sample_ms=0.0)
    trial = TrialSettings("server", min_duration_ms=300, min_query_count=100, latency_bound_ms=20.0,
                          target_qps=600.0, sample_count=32, max_duration_ms=2000)
    out = run_trial(trial, policy, session.instances(policy), tmp_path / "trial")
    assert out.result.verdict == "INVALID"
    assert any("latency bound" in r for r in out.result.reasons)


def test_every_scenario_gives_a_row(tmp_path):
    rows, outcomes = [], []
    plan = ServingPlan(scenarios=("single-stream", "multi-stream", "server", "offline"),
                       policies=(BatchPolicy(8, 2.0, 1),), trial=SHORT, server_qps=800.0, price_per_hour=3.6)
    serve_variant(plan, _session(tmp_path), IDENTITY, tmp_path, lambda r, d: rows.append((r, d)),
                  lambda *o: outcomes.append(o))
    by = {r.scenario: (r, d) for r, d in rows}
    assert list(by) == ["offline", "single-stream", "multi-stream", "server"]
    for row, details in by.values():
        assert row.status == "ok", row.error
        assert row.verdict in ("VALID", "INVALID")
        assert row.qps and row.qps > 0
        assert (tmp_path / row.loadgen_logs / SUMMARY_LOG).exists()
        assert details.trials
    assert by["single-stream"][0].reported_latency_ms == by["single-stream"][0].latency_p90_ms
    assert by["multi-stream"][0].max_batch == 8
    server = by["server"][0]
    assert server.verdict == "VALID" and server.target_qps == 800.0
    # 3.6 per hour = 0.001 per second; at 800 samples/s a million cost 0.001 / 800 * 1e6
    assert server.cost_per_million == pytest.approx(1.25)
    assert by["offline"][1].batch_histogram.get(8, 0) > 0  # a full queue forms full batches
    assert outcomes == []  # a fixed rate is not a search


def test_search_through_loadgen_finds_a_valid_rate_below_offline(tmp_path):
    rows, outcomes = [], []
    plan = ServingPlan(scenarios=("server",), policies=(BatchPolicy(8, 2.0, 1),), trial=SHORT, rel_tol=0.3)
    serve_variant(plan, _session(tmp_path), IDENTITY, tmp_path, lambda r, d: rows.append((r, d)),
                  lambda *o: outcomes.append(o))
    offline = next(r for r, _ in rows if r.scenario == "offline")
    server = next(r for r, _ in rows if r.scenario == "server")
    (best_id, best_qps, message), = outcomes
    assert best_id == server.row_id and server.verdict == "VALID"
    assert 0 < best_qps == server.target_qps <= offline.qps
    assert "best server configuration" in message
