"""The user's model itself segfaults, aborts, hangs or exhausts memory: the FP32 reference stage (in its own
worker) fails, and the run ends with one line naming the stage and the cause, exit code 3, and valid files
with a row for every planned cell. The parent never imports the model's code; ``--resume`` finishes the run
once the model works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infertune.config import validate_config
from infertune.errors import RunFailed
from infertune.pipeline import run
from infertune.results import read_rows

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ["pytorch:fp32", "null:fp32"]


def _config(tmp_path: Path, model: str, batches=(1, 2), **bench) -> dict:
    return {
        "model": {"name": model, "input_shape": [1, 3, 32, 32], "pretrained": False},
        "benchmark": {"batch_sizes": list(batches), "warmup_iterations": 0, "benchmark_iterations": 1,
                      "min_time_s": 0.0, "device": "cpu", "isolation": "process", **bench},
        "optimization": {"variants": VARIANTS},
        "verify": {"inputs": "synthetic", "samples": 4},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    }


#: the CLI in a subprocess; it prints, last, whether the model's module was ever imported in this process.
PROBE = ("import sys; from infertune.cli import main; code = main(sys.argv[1:]); "
         "print('MODEL-MODULE-IMPORTED' if 'tests.fixture_models' in sys.modules else 'model-module-absent'); "
         "sys.exit(code)")


def _cli(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), **(env or {})}
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, check=False, env=environ)


def _write(tmp_path: Path, doc: dict) -> Path:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_segfaulting_model_ends_the_run_with_one_line_exit_3_and_a_row_per_cell(tmp_path):
    config = _write(tmp_path, _config(tmp_path, "tests.fixture_models:segfaults_in_forward"))
    proc = _cli(tmp_path, "run", "-q", "--config", str(config))
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the FP32 reference crashed in the model's forward "
                                                   "at batch 1: worker process killed by SIGSEGV"), proc.stderr
    assert "--resume" in lines[0]
    assert proc.stdout.strip().splitlines()[-1] == "model-module-absent"  # the parent never imported it
    (csv,) = (tmp_path / "results").glob("benchmark_results_*.csv")
    rows = read_rows(csv)
    assert sorted((r.variant, r.batch_size) for r in rows) == sorted((v, b) for v in VARIANTS for b in (1, 2))
    assert all(r.status == "crashed" and "SIGSEGV" in r.error and "FP32 reference" in r.error for r in rows)
    doc = json.loads(csv.with_suffix(".json").read_text())
    assert doc["run"]["status"] == "failed" and "SIGSEGV" in doc["run"]["failure"]
    assert len(doc["rows"]) == 4


@pytest.mark.parametrize("model, status, words, bench", [
    ("aborts_in_forward", "crashed", ["killed by SIGABRT"], {}),
    ("allocates_in_forward", "crashed", ["out of memory", "the model's forward at batch 1"], {}),
    ("allocates_in_forward", "crashed", ["out of memory"], {"memory_limit_mb": 1536}),
    ("hangs_in_forward", "timeout", ["timed out", "ran longer than 10 s", "cell_timeout_s"], {"cell_timeout_s": 10}),
    ("hangs_at_batch_3", "timeout", ["the model's forward at batch 3"], {"cell_timeout_s": 10}),
])
def test_every_reference_fault_is_named_and_every_cell_has_a_row(tmp_path, model, status, words, bench):
    batches = (1, 3) if model.endswith("batch_3") else (1, 2)
    cfg = validate_config(_config(tmp_path, f"tests.fixture_models:{model}", batches=batches, **bench))
    with pytest.raises(RunFailed) as info:
        run(cfg, log=lambda m: None)
    message = str(info.value)
    assert message.startswith("the FP32 reference ")
    for word in words:
        assert word in message, message
    assert "cannot take inputs of shape" not in message  # an allocation failure is not a shape problem
    rows = read_rows(info.value.result.csv_path)
    assert len(rows) == 4 and {r.status for r in rows} == {status}
    assert all(words[0] in r.error for r in rows)


def test_verify_and_resume_end_the_same_way_then_resume_finishes_once_the_model_works(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {"INFERTUNE_TEST_MARKERS": str(markers)}
    config = _write(tmp_path, _config(tmp_path, "tests.fixture_models:segfaults_in_forward", batches=(1,)))
    proc = _cli(tmp_path, "verify", "-q", "--config", str(config))
    assert proc.returncode == 3 and "error: the FP32 reference crashed" in proc.stderr, proc.stderr
    assert list((tmp_path / "results").glob("verify_results_*.csv"))

    config = _write(tmp_path, _config(tmp_path, "tests.fixture_models:segfaults_once", batches=(1,)))
    first = _cli(tmp_path, "run", "-q", "--config", str(config), env=env)
    assert first.returncode == 3 and "SIGSEGV" in first.stderr, first.stderr
    (csv,) = (tmp_path / "results").glob("benchmark_results_*.csv")
    assert {r.status for r in read_rows(csv)} == {"crashed"}
    resumed = _cli(tmp_path, "run", "-q", "--resume", str(csv), env=env)  # the model now works
    assert resumed.returncode == 0, resumed.stderr
    rows = read_rows(csv)
    assert [(r.variant, r.status) for r in rows] == [("pytorch:fp32", "ok"), ("null:fp32", "ok")]
    assert json.loads(csv.with_suffix(".json").read_text())["run"]["status"] == "complete"
    assert resumed.stdout.strip().splitlines()[-1] == "model-module-absent"


def test_a_bad_input_found_by_the_reference_worker_is_exit_2_and_leaves_no_files(tmp_path):
    doc = _config(tmp_path, "infertune.testing:tiny_convnet", batches=(1,))
    doc["model"]["input_shape"] = [1, 5, 32, 32]
    proc = _cli(tmp_path, "run", "-q", "--config", str(_write(tmp_path, doc)))
    assert proc.returncode == 2 and proc.stderr.startswith("error: infertune.testing:tiny_convnet cannot take "
                                                           "inputs of shape [1, 5, 32, 32]"), proc.stderr
    assert not list(tmp_path.rglob("benchmark_results_*"))
