"""The pipeline end to end on the tiny model: rows, files, failures as data, device fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infertune.config import validate_config
from infertune.pipeline import run
from infertune.results import read_rows, read_samples

TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}


def _cfg(tmp_path, model=TINY, variants=("pytorch:fp32", "null:fp32"), batches=(1, 2), isolation="none", **bench):
    return validate_config({
        "model": model,
        "benchmark": {"batch_sizes": list(batches), "warmup_iterations": 1, "benchmark_iterations": 3,
                      "min_time_s": 0.0, "isolation": isolation, "device": "cpu", **bench},
        "optimization": {"variants": list(variants)},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })


def test_rows_and_files_for_every_cell(tmp_path):
    result = run(_cfg(tmp_path), log=lambda m: None)
    assert [(r.variant, r.batch_size) for r in result.rows] == [
        ("pytorch:fp32", 1), ("pytorch:fp32", 2), ("null:fp32", 1), ("null:fp32", 2)]
    eager = result.rows[0]
    assert eager.status == "ok" and eager.fidelity_ok is True
    assert eager.speedup_vs_pytorch == pytest.approx(1.0)
    assert eager.latency_min_ms <= eager.latency_p50_ms <= eager.latency_max_ms
    assert eager.iterations >= 3 and eager.threads >= 1 and eager.weights == "random"
    assert eager.first_inference_ms > 0 and eager.peak_host_mb > 0
    null = result.rows[2]
    assert null.fidelity_ok is None  # the null backend produces nothing to compare
    # the files hold exactly these rows, the samples, the config and the environment
    assert [r.cell_id for r in read_rows(result.csv_path)] == [r.cell_id for r in result.rows]
    doc = json.loads(result.json_path.read_text())
    assert doc["config"]["benchmark"]["batch_sizes"] == [1, 2]
    assert "isa" in doc["environment"] and doc["environment"]["device"] == "cpu"
    samples = read_samples(result.csv_path)
    assert len(samples[eager.cell_id]) == eager.iterations
    assert result.config_path.read_text().count("batch_sizes") == 1


def test_cuda_request_without_gpu_falls_back_and_says_so(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the fallback path does not apply")
    lines: list[str] = []
    result = run(_cfg(tmp_path, variants=["pytorch:fp32"], batches=[1], device="cuda"), log=lines.append)
    assert len([m for m in lines if "no CUDA GPU" in m]) == 1
    assert result.rows[0].device == "cpu" and result.rows[0].requested_device == "cuda"


def test_a_raising_variant_becomes_a_failed_row_and_the_run_goes_on(tmp_path):
    model = {**TINY, "name": "tests.fixture_models:raises_at_batch_2"}
    result = run(_cfg(tmp_path, model=model, variants=["pytorch:fp32", "null:fp32"], batches=[1, 2]),
                 log=lambda m: None)
    status = {(r.variant, r.batch_size): r for r in result.rows}
    assert status[("pytorch:fp32", 1)].status == "ok"
    failed = status[("pytorch:fp32", 2)]
    assert failed.status == "failed" and "deliberate failure at batch 2" in failed.error
    assert status[("null:fp32", 2)].status == "ok"
    assert len(read_rows(result.csv_path)) == 4


def test_unavailable_variant_rows_say_why(tmp_path, monkeypatch):
    from infertune.backends.base import Availability
    from infertune.backends.registry import get_backend

    backend = get_backend("null")
    monkeypatch.setattr(type(backend), "availability", lambda self, d, p: Availability.no("not installed: pip install x"))
    result = run(_cfg(tmp_path, variants=["pytorch:fp32", "null:fp32"], batches=[1]), log=lambda m: None)
    row = result.rows[-1]
    assert row.status == "unavailable" and "pip install x" in row.error


def test_rounds_pool_samples_per_cell(tmp_path):
    one = run(_cfg(tmp_path / "a", variants=["pytorch:fp32"], batches=[1]), log=lambda m: None)
    three = run(_cfg(tmp_path / "b", variants=["pytorch:fp32", "null:fp32"], batches=[1], rounds=3),
                log=lambda m: None)
    assert len(three.rows) == 2  # still one row per cell
    eager = three.rows[0]
    assert eager.rounds == 3 and one.rows[0].rounds == 1
    samples = read_samples(three.csv_path)[eager.cell_id]
    assert eager.iterations == len(samples) >= 3 * one.rows[0].iterations
    assert eager.latency_p50_ms == pytest.approx(float(np.median(samples)))
    assert len(json.loads(eager.round_p50s_ms)) == 3  # each round's own median: compare's run-to-run spread
    assert three.rows[1].role == "harness" and three.rows[1].speedup_vs_pytorch is None


def test_python_api_runs_and_lists_backends(tmp_path):
    import infertune

    assert "onnxruntime" in infertune.list_backends()
    result = infertune.run(
        log=lambda m: None,
        model=TINY,
        benchmark={"batch_sizes": [2], "warmup_iterations": 0, "benchmark_iterations": 2, "min_time_s": 0.0,
                   "isolation": "none", "device": "cpu"},
        optimization={"variants": ["pytorch:fp32"]},
        output={"dir": str(tmp_path / "r"), "models_dir": str(tmp_path / "m")},
    )
    df = infertune.load_results(result.csv_path)
    assert list(df["status"]) == ["ok"] and df.loc[0, "batch_size"] == 2
    assert isinstance(infertune.RunConfig(), infertune.RunConfig)


def test_a_model_that_branches_on_its_input_is_judged_on_the_batches_it_really_sees(tmp_path):
    """``if x.mean() > 0``: the reference must run exactly the variant's batches, or eager PyTorch itself fails."""
    from infertune.inputs import InputSource

    samples = InputSource(shape=(3, 32, 32)).verification(8)
    means = samples.reshape(8, -1).mean(axis=1)
    assert (means > 0).any() and (means <= 0).any()  # per sample, both branches are taken: batches matter
    model = {**TINY, "name": "tests.fixture_models:branches_on_input"}
    cfg = _cfg(tmp_path, model=model, variants=["pytorch:fp32", "torch_compile:fp32", "torchscript:fp32"])
    cfg.verify.inputs, cfg.verify.samples = "synthetic", 8
    rows = {(r.variant, r.batch_size): r for r in run(cfg, log=lambda m: None, measure=False).rows}
    for variant in ("pytorch:fp32", "torch_compile:fp32"):
        for batch in (1, 2):
            row = rows[(variant, batch)]
            assert row.status == "ok" and row.cosine_min > 0.9999, (variant, batch, row.status, row.error)
    # tracing froze the branch its example batch took: the gate must see it (per-sample batches take both)
    assert rows[("torchscript:fp32", 1)].status == "fidelity_failed"


def test_runs_started_at_once_into_one_folder_each_keep_all_their_rows(tmp_path, monkeypatch):
    import threading

    from infertune import sink
    from infertune.journal import read_journal

    monkeypatch.setattr(sink, "timestamp", lambda: "20261130_120000")  # all in the same second, for sure
    results: list = []
    errors: list = []

    def one_run(index: int) -> None:
        try:
            cfg = _cfg(tmp_path, batches=(1, index + 2))
            results.append(run(cfg, log=lambda m: None))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=one_run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert len({r.csv_path for r in results}) == 4  # four runs, four sets of files
    assert len(list((tmp_path / "results").glob("*.csv"))) == 4
    for result in results:
        own = {(r.variant, r.batch_size) for r in result.rows}
        assert len(own) == 4
        assert {(r.variant, r.batch_size) for r in read_rows(result.csv_path)} == own
        journal = read_journal(result.journal_path)
        assert {(rec.row["variant"], rec.row["batch_size"]) for rec in journal} == own
        assert {rec.row["run_id"] for rec in journal} == {result.csv_path.stem.split("_results_")[1]}
