"""Fault injection: a run over backends that segfault, abort, exit, hang, exhaust the memory limit or
raise, next to good ones, keeps every row, classifies each failure, and leaves files that load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from infertune.config import validate_config
from infertune.journal import read_journal
from infertune.pipeline import run
from infertune.results import read_rows

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}
FAULTS = ["fault_segfault:fp32", "fault_abort:fp32", "fault_exit:fp32", "fault_hang:fp32", "fault_memory:fp32",
          "fault_raise:fp32"]


def _cfg(tmp_path, variants, batches=(1, 2), **bench):
    return validate_config({
        "model": TINY,
        "benchmark": {"batch_sizes": list(batches), "warmup_iterations": 1, "benchmark_iterations": 2,
                      "min_time_s": 0.0, "device": "cpu", "isolation": "process", **bench},
        "optimization": {"variants": list(variants)},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })


def test_every_fault_becomes_a_classified_row_and_the_run_goes_on(tmp_path, fault_backends, monkeypatch):
    from infertune.executors import process

    empty_wakeups = []
    real_wait = process.wait

    def counting_wait(objects, timeout=None):
        ready = real_wait(objects, timeout)
        if not ready:
            empty_wakeups.append(timeout)
        return ready

    monkeypatch.setattr(process, "wait", counting_wait)
    variants = ["pytorch:fp32", *FAULTS, "null:fp32"]
    # the timeout also covers a worker's start (importing torch: seconds on a busy machine)
    result = run(_cfg(tmp_path, variants, cell_timeout_s=10, memory_limit_mb=2048), log=lambda m: None)

    rows = {(r.variant, r.batch_size): r for r in result.rows}
    assert sorted(rows) == sorted((v, b) for v in variants for b in (1, 2))  # every cell has a row

    def check(variant, status, *words, batch=1):
        row = rows[(variant, batch)]
        assert row.status == status, (variant, batch, row.status, row.error)
        for word in words:
            assert word in row.error, (variant, batch, row.error)

    for batch in (1, 2):
        assert rows[("pytorch:fp32", batch)].status == "ok"
        assert rows[("null:fp32", batch)].status == "ok"
    check("fault_segfault:fp32", "crashed", "killed by SIGSEGV")
    check("fault_segfault:fp32", "crashed", "not run: the worker crashed on batch 1", batch=2)
    check("fault_abort:fp32", "crashed", "killed by SIGABRT")
    check("fault_exit:fp32", "crashed", "exited with code 3", "SystemExit: 3")
    check("fault_hang:fp32", "timeout", "cell ran longer than 10 s", "cell_timeout_s")
    check("fault_hang:fp32", "timeout", "not run", batch=2)
    for batch in (1, 2):  # the worker survives its MemoryError and tries the next batch size too
        check("fault_memory:fp32", "crashed", "out of memory", "2048 MB", "benchmark.memory_limit_mb", batch=batch)
        check("fault_raise:fp32", "failed", "deliberate failure in prepare", batch=batch)

    # the files agree with the rows and load
    assert [(r.cell_id, r.status) for r in read_rows(result.csv_path)] == [(r.cell_id, r.status) for r in result.rows]
    doc = json.loads(result.json_path.read_text())
    assert doc["run"]["status"] == "complete" and doc["run"]["cells_planned"] == len(rows)
    journal = read_journal(result.journal_path)
    assert sorted((rec.row["variant"], rec.row["batch_size"]) for rec in journal) == sorted(rows)
    # the parent slept until something happened: the only wake-up without news was the hang's deadline
    assert len(empty_wakeups) == 1


def test_a_variant_timeout_bounds_all_its_batch_sizes(tmp_path, fault_backends):
    result = run(_cfg(tmp_path, ["fault_hang:fp32"], batches=(1, 2, 4), variant_timeout_s=3), log=lambda m: None)
    assert [r.status for r in result.rows] == ["timeout"] * 3
    assert "variant_timeout_s" in result.rows[0].error and "not run" in result.rows[2].error


PARENT_IMPORTS = """
import json, sys
from infertune.config import validate_config
from infertune.pipeline import run

if __name__ == "__main__":
    out = sys.argv[1]
    cfg = validate_config({
        "model": {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False},
        "benchmark": {"batch_sizes": [1], "warmup_iterations": 0, "benchmark_iterations": 2, "min_time_s": 0,
                      "device": "cpu"},
        "optimization": {"variants": ["onnxruntime:fp32", "openvino:fp32"]},
        "output": {"dir": out + "/results", "models_dir": out + "/models"}})
    result = run(cfg, log=lambda m: None)
    roots = sorted({m.split(".")[0] for m in sys.modules})
    print(json.dumps({"statuses": [r.status for r in result.rows], "modules": roots}))
"""


def test_the_parent_never_imports_the_runtimes_its_workers_use(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PARENT_IMPORTS)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["statuses"] == ["ok", "ok"]  # the workers did use ONNX Runtime and OpenVINO
    for runtime in ("onnxruntime", "openvino", "tensorrt", "onnx", "nncf"):
        assert runtime not in report["modules"], runtime
