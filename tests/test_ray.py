"""The Ray executor on a local Ray instance (2 CPUs): rows shaped like a local run's, the measurement slot
respected, a dead job or Ray worker becomes rows, and an interrupted run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray", reason="the Ray executor needs ray: pip install 'infertune[ray]'")

from infertune.config import validate_config
from infertune.executors.ray import _core_share
from infertune.journal import read_journal
from infertune.pipeline import run
from infertune.results import FIELD_NAMES, ResultRow, read_rows

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}
CLI = "import sys, tests.fault_backends; from infertune.cli import main; sys.exit(main(sys.argv[1:]))"
NODE_FIELDS = ("node", "node_cpu", "node_isa")
#: filled by Ray runs only: where the cell ran, and when it held the node's measurement slot
RAY_ONLY = (*NODE_FIELDS, "node_gpu", "measure_start_unix_s", "measure_end_unix_s")
#: the machine's load over a timed loop: empty when the loop was shorter than 10 of /proc/stat's ticks (measure/load.py)
LOAD_FIELDS = ("other_cpu_cores", "cpu_steal_pct", "load_avg_1m_before", "load_avg_1m_after", "machine_busy")
#: empty below 6 samples: the Ray run times each cell longer (min_time_s) than the local one
SAMPLE_COUNT_FIELDS = ("p50_ci_over_median",)


def _config(tmp_path: Path, variants: list[str], isolation: str = "ray", batches=(1, 2), **bench) -> dict:
    return {
        "model": TINY,
        "benchmark": {"batch_sizes": list(batches), "warmup_iterations": 1, "benchmark_iterations": 2,
                      "min_time_s": 0.0, "device": "cpu", "isolation": isolation, **bench},
        "optimization": {"variants": variants},
        "output": {"dir": str(tmp_path / isolation), "models_dir": str(tmp_path / "models")},
        "ray": {"num_cpus": 2},
    }


def _no_overlap(rows: list[ResultRow]) -> None:
    windows = sorted((r.measure_start_unix_s, r.measure_end_unix_s, r.variant, r.batch_size) for r in rows)
    assert all(start is not None and end is not None and start <= end for start, end, *_ in windows), windows
    for (_, end, *first), (start, _, *second) in pairwise(windows):
        assert end <= start, f"{first} and {second} measured at the same time on one node"


def test_rows_match_a_local_run_and_measurements_take_turns(tmp_path):
    variants = ["pytorch:fp32", "null:fp32", "torchscript:fp32"]
    local = run(validate_config(_config(tmp_path, variants, isolation="process")), log=lambda m: None)
    # min_time_s makes each measurement last long enough that two jobs at once would overlap without the slot
    on_ray = run(validate_config(_config(tmp_path, variants, min_time_s=0.3)), log=lambda m: None)

    assert local.csv_path.read_text().splitlines()[0] == on_ray.csv_path.read_text().splitlines()[0] \
        == ",".join(FIELD_NAMES)
    def shape(rows):  # what each row says, and which fields it fills
        return [(r.variant, r.batch_size, r.status, r.threads, [f for f in FIELD_NAMES if getattr(r, f) is None and f not in (*RAY_ONLY, *LOAD_FIELDS, *SAMPLE_COUNT_FIELDS)])
                for r in rows]

    assert shape(on_ray.rows) == shape(local.rows)
    assert all(r.status == "ok" and r.latency_p50_ms for r in on_ray.rows)
    assert all(all(getattr(r, f)) for r in on_ray.rows for f in NODE_FIELDS)  # where each cell ran
    assert not any(getattr(r, f) for r in local.rows for f in NODE_FIELDS)
    _no_overlap(on_ray.rows)
    doc = json.loads(on_ray.json_path.read_text())
    assert doc["run"]["status"] == "complete" and set(doc["samples_ms"]) == {r.cell_id for r in on_ray.rows}
    assert "=== torchscript:fp32 (pid" in on_ray.log_path.read_text()  # the workers' logs came back


def test_a_segfault_and_a_dead_ray_worker_become_crashed_rows(tmp_path, fault_backends):
    variants = ["null:fp32", "fault_segfault:fp32", "fault_kill_parent:fp32"]
    result = run(validate_config(_config(tmp_path, variants)), log=lambda m: None)

    rows = {(r.variant, r.batch_size): r for r in result.rows}
    assert len(rows) == 6 and rows[("null:fp32", 1)].status == rows[("null:fp32", 2)].status == "ok"
    segfault = rows[("fault_segfault:fp32", 1)]
    assert segfault.status == "crashed" and "killed by SIGSEGV" in segfault.error and segfault.node
    assert rows[("fault_segfault:fp32", 2)].error == "not run: the worker crashed on batch 1"
    lost = rows[("fault_kill_parent:fp32", 1)]
    assert lost.status == "crashed" and "the Ray worker running the job died" in lost.error, lost.error
    assert "WorkerCrashedError" in lost.error and lost.node  # Ray's reason, and where it happened
    assert rows[("fault_kill_parent:fp32", 2)].status == "crashed"
    assert len(read_journal(result.csv_path.with_suffix(".jsonl"))) == 6


def _cli(args: list[str], tmp_path: Path, markers: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               INFERTUNE_TEST_MARKERS=str(markers))
    return subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_ctrl_c_cancels_the_tasks_keeps_finished_rows_and_resume_finishes(tmp_path, fault_backends):
    config = tmp_path / "run.yaml"
    # one job at a time: slow_once's long prepare holds the slot shared, so a job beside it could not measure
    settings = _config(tmp_path, ["pytorch:fp32", "slow_once:fp32"])
    settings["ray"]["num_cpus"] = 1
    config.write_text(yaml.safe_dump(settings))
    proc = _cli(["run", "-q", "--config", str(config)], tmp_path, fault_backends)
    marker = fault_backends / "slow_once.1"
    results = tmp_path / "ray"
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() or len(read_rows(next(results.glob("*.csv")))) < 2:  # slow_once asleep, baseline done
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never got there"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:  # a failed test must not leave slow_once holding this machine's measurement slot
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)

    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    csv = next(results.glob("benchmark_results_*.csv"))
    rows = read_rows(csv)
    assert [(r.variant, r.batch_size, r.status) for r in rows] == [
        ("pytorch:fp32", 1, "ok"), ("pytorch:fp32", 2, "ok"), ("slow_once:fp32", 1, "interrupted")]
    assert "interrupted by SIGINT during prepare" in rows[-1].error
    worker = int(marker.read_text())
    time.sleep(2)  # force-cancelled Ray workers take their job's worker with them (PR_SET_PDEATHSIG)
    assert not Path(f"/proc/{worker}").exists() or "\nState:\tZ" in Path(f"/proc/{worker}/status").read_text()

    proc = _cli(["run", "-q", "--resume", str(results)], tmp_path, fault_backends)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    statuses = {(r.variant, r.batch_size): (r.status, r.node) for r in read_rows(csv)}
    assert len(statuses) == 4 and all(status == "ok" and node for status, node in statuses.values())
    assert len([rec for rec in read_journal(csv.with_suffix(".jsonl")) if rec.row["variant"] == "pytorch:fp32"]) == 2


def test_each_gpu_gets_its_own_share_of_the_cores():
    cores = list(range(16))
    shares = [_core_share(str(gpu), 8, cores) for gpu in range(8)]
    assert shares[0] == (0, 1) and shares[7] == (14, 15)
    assert sorted(c for share in shares for c in share) == cores  # disjoint, and every core used
    assert _core_share("0", 4, [0, 1]) == (0,)  # fewer cores than GPUs: one each, shared from the start


