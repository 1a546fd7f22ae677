"""``infertune scenario`` end to end: the reference and the variant in workers, LoadGen traffic, rows and
logs on disk; a real runtime on the tiny model; a refused unverified variant; a crash under traffic is a row."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mlperf_loadgen", reason="MLPerf LoadGen is not installed: pip install 'infertune[serving]'")

import tests.scenario_fakes  # noqa: F401  (registers the sleep backend)
from infertune.cli import main
from infertune.scenario.rows import read_scenario_file

TINY = ["--model", "infertune.testing:tiny_convnet", "--input-shape", "1", "3", "32", "32", "--no-pretrained",
        "--device", "cpu", "--threads", "1"]
SHORT = ["--min-duration-s", "0.2", "--min-query-count", "700"]


@pytest.fixture(autouse=True, scope="module")
def sleep_backend():
    from tests.scenario_sleep_backend import registered

    with registered():
        yield


def _scenario(tmp_path, *args: str) -> tuple[int, list]:
    code = main(["scenario", *args, *TINY, *SHORT, "--output-dir", str(tmp_path / "out")])
    csv = sorted((tmp_path / "out").glob("scenario_results_*.csv"))
    return code, read_scenario_file(csv[-1])[0] if csv else []


def test_server_search_in_a_worker_with_the_sleep_backend(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, rows = _scenario(tmp_path, "server", "--variants", "sleep:fp32:fixed_ms=0.5:per_sample_ms=0.05",
                           "--max-batch", "4", "--max-delay-ms", "1", "--instances", "1",
                           "--latency-bound-ms", "50", "--search-budget-s", "60")
    assert code == 0
    server = [r for r in rows if r.scenario == "server"]
    assert len(server) == 1 and server[0].best and server[0].verdict == "VALID"
    offline = next(r for r in rows if r.scenario == "offline")
    assert 0 < server[0].target_qps <= offline.qps
    logs = tmp_path / "out" / server[0].loadgen_logs
    assert (logs / "mlperf_log_summary.txt").exists() and (logs / "mlperf_log_detail.txt").exists()


def test_real_runtime_offline_and_single_stream(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, rows = _scenario(tmp_path, "offline", "--variants", "onnxruntime:fp32", "--max-batch", "4",
                           "--instances", "1", "2")
    assert code == 0
    assert [r.status for r in rows] == ["ok", "ok"], [r.error for r in rows]
    assert all(r.fidelity_ok and r.verdict in ("VALID", "INVALID") and r.qps > 0 for r in rows)
    assert {r.instances for r in rows} == {1, 2}


def test_unverified_variant_is_refused_unless_forced(tmp_path, monkeypatch):
    from tests.faulty_backends import registered

    monkeypatch.chdir(tmp_path)
    with registered():
        code, rows = _scenario(tmp_path, "offline", "--variants", "faulty:fp32:perturb=0.5", "--max-batch", "2",
                               "--instances", "1", "--isolation", "none")
    assert code == 0
    assert [r.status for r in rows] == ["fidelity_failed"]
    assert "--force" in rows[0].error


def test_runtime_crash_under_traffic_is_a_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, rows = _scenario(tmp_path, "all", "--variants", "sleep:fp32:crash_after=20", "--max-batch", "2",
                           "--instances", "1", "--server-qps", "100")
    assert code == 0
    by = {r.scenario: r for r in rows}
    assert by["offline"].status == "crashed" and "SIGSEGV" in by["offline"].error
    assert all(by[s].status == "crashed" and "not run" in by[s].error
               for s in ("single-stream", "multi-stream", "server"))
    doc = json.loads((tmp_path / "out").glob("scenario_results_*.json").__next__().read_text())
    assert doc["run"]["status"] == "complete"


def test_a_bound_nothing_meets_exits_1_with_the_best_found(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, rows = _scenario(tmp_path, "server", "--variants", "sleep:fp32:fixed_ms=3", "--max-batch", "2",
                           "--instances", "1", "--latency-bound-ms", "1", "--search-budget-s", "8")
    assert code == 1
    out = capsys.readouterr().out
    assert "no configuration met p99 <= 1 ms" in out and "the best found: b2 d2ms x1" in out
    server = next(r for r in rows if r.scenario == "server")
    assert server.verdict == "INVALID" and not server.best and "latency bound" in server.reasons


def test_a_scenario_job_gets_every_core_on_a_gpu_too(monkeypatch):
    """Its executor runs one job at a time, so the plan's thread count is not a share for jobs side by side
    (on a GPU the default run's width would leave each job one core)."""
    from infertune import env
    from infertune import plan as planmod
    from infertune.config import validate_config
    from infertune.scenario.run import run_scenarios

    monkeypatch.setattr(env, "host_memory_gb", lambda: 64.0)
    monkeypatch.setattr(env, "gpu_memory_gb", lambda: 80.0)
    seen = []

    def stop(cfg, measure, log):  # type: ignore[no-untyped-def]
        seen.append(planmod.default_threads(cfg, "cuda", 16))
        raise KeyboardInterrupt

    monkeypatch.setattr(planmod, "make_plan", stop)
    cfg = validate_config({"model": {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32],
                                     "pretrained": False}})
    assert planmod.default_threads(cfg, "cuda", 16) < 16  # the run's default, jobs side by side
    with pytest.raises(KeyboardInterrupt):
        run_scenarios(cfg, ["offline"], log=lambda m: None)
    assert seen == [16]
