"""Ctrl-C / SIGTERM stop a run cleanly and ``--resume`` finishes it: every cell accounted for, files that load.

The CLI runs in a subprocess that registers the test backends (tests/fault_backends.py) and then calls
``infertune.cli.main``; ``slow_once`` sleeps in its first cell and leaves a marker, so the signal
always lands in a known cell.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from infertune.config import validate_config
from infertune.errors import ConfigError, InfertuneError
from infertune.interrupts import RunInterrupted
from infertune.journal import read_journal
from infertune.pipeline import run
from infertune.results import read_rows
from infertune.resume import load_resume

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}
CLI = "import sys, tests.fault_backends; from infertune.cli import main; sys.exit(main(sys.argv[1:]))"


def _config(tmp_path: Path, variants: list[str], batches=(1, 2), **bench) -> dict:
    return {
        "model": TINY,
        "benchmark": {"batch_sizes": list(batches), "warmup_iterations": 1, "benchmark_iterations": 2,
                      "min_time_s": 0.0, "device": "cpu", "isolation": "process", **bench},
        "optimization": {"variants": variants},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    }


def _cli(args: list[str], tmp_path: Path, markers: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               INFERTUNE_TEST_MARKERS=str(markers))
    return subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _interrupt_when_started(proc: subprocess.Popen, marker: Path, signum: int) -> tuple[int, str, str]:
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "slow_once never started"
        time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status  # a zombie nobody reaped is dead too


def test_sigint_then_resume_accounts_for_every_cell(tmp_path, fault_backends):
    # the ladder runs null:fp32 right after the pytorch:fp32 baseline
    variants = ["pytorch:fp32", "null:fp32", "fault_segfault:fp32", "fault_raise:fp32", "slow_once:fp32",
                "fault_hang:fp32"]
    config = tmp_path / "run.yaml"
    # the timeout also covers a worker's start (importing torch: seconds on a busy machine)
    config.write_text(yaml.safe_dump(_config(tmp_path, variants, cell_timeout_s=15)))
    code, out, err = _interrupt_when_started(_cli(["run", "-q", "--config", str(config)], tmp_path, fault_backends),
                                             fault_backends / "slow_once.1", signal.SIGINT)

    assert code == 130, err
    assert "Traceback" not in out + err
    csv = next((tmp_path / "results").glob("benchmark_results_*.csv"))
    message = err.strip().splitlines()[-1]
    assert message.startswith("interrupted by SIGINT: 8 of 12 cells finished, the cell in progress is marked "
                              "interrupted") and f"infertune run --resume {csv}" in message
    rows = read_rows(csv)
    assert [(r.variant, r.batch_size, r.status) for r in rows] == [
        ("pytorch:fp32", 1, "ok"), ("pytorch:fp32", 2, "ok"), ("null:fp32", 1, "ok"), ("null:fp32", 2, "ok"),
        ("fault_segfault:fp32", 1, "crashed"), ("fault_segfault:fp32", 2, "crashed"),
        ("fault_raise:fp32", 1, "failed"), ("fault_raise:fp32", 2, "failed"),
        ("slow_once:fp32", 1, "interrupted")]
    assert "interrupted by SIGINT during prepare" in rows[-1].error
    doc = json.loads(csv.with_suffix(".json").read_text())
    assert doc["run"]["status"] == "interrupted" and doc["run"]["stopped_by"] == "SIGINT"
    assert [rec.status for rec in read_journal(csv.with_suffix(".jsonl"))][-1] == "interrupted"
    assert _gone(int((fault_backends / "slow_once.1").read_text()))  # the worker did not outlive the run

    # resume the way a user would: name the results folder
    proc = _cli(["run", "-q", "--resume", str(tmp_path / "results")], tmp_path, fault_backends)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    rows = read_rows(csv)
    statuses = {(r.variant, r.batch_size): r.status for r in rows}
    assert len(rows) == len(statuses) == 12  # one row per cell, the interrupted one replaced
    assert statuses[("slow_once:fp32", 1)] == statuses[("slow_once:fp32", 2)] == "ok"
    assert statuses[("fault_hang:fp32", 1)] == statuses[("fault_hang:fp32", 2)] == "timeout"
    assert statuses[("fault_segfault:fp32", 1)] == "crashed" and statuses[("fault_raise:fp32", 2)] == "failed"
    doc = json.loads(csv.with_suffix(".json").read_text())
    assert doc["run"]["status"] == "complete" and len(doc["run"]["resumed"]) == 1
    journal = read_journal(csv.with_suffix(".jsonl"))
    done_before = [rec for rec in journal if rec.row["variant"] == "pytorch:fp32"]
    assert len(done_before) == 2  # finished cells were not run again
    assert len(journal) == 9 + 4
    assert len(list((tmp_path / "results").glob("benchmark_results_*.csv"))) == 1  # same files, no new run


def test_sigterm_stops_cleanly_with_its_own_exit_code(tmp_path, fault_backends):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, ["slow_once:fp32"], batches=[1])))
    code, out, err = _interrupt_when_started(_cli(["run", "-q", "--config", str(config)], tmp_path, fault_backends),
                                             fault_backends / "slow_once.1", signal.SIGTERM)
    assert code == 143, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in out + err
    rows = read_rows(next((tmp_path / "results").glob("*.csv")))
    assert [(r.status, r.batch_size) for r in rows] == [("interrupted", 1)]
    assert _gone(int((fault_backends / "slow_once.1").read_text()))


def test_in_process_interrupt_in_the_second_round_then_resume(tmp_path, fault_backends):
    cfg = validate_config(_config(tmp_path, ["pytorch:fp32", "interrupt_second:fp32", "null:fp32"], batches=[1],
                                  isolation="none", rounds=2))
    with pytest.raises(RunInterrupted) as info:
        run(cfg, log=lambda m: None)
    assert info.value.exit_code == 130 and "round 2 of 2 was in progress" in info.value.summary
    csv = next((tmp_path / "results").glob("*.csv"))
    rows = {r.variant: r for r in read_rows(csv)}
    assert [r.status for r in rows.values()] == ["ok", "ok", "ok"]  # every cell kept its first round
    assert "round 2 interrupted" in rows["interrupt_second:fp32"].note
    assert rows["pytorch:fp32"].rounds == 2 and rows["interrupt_second:fp32"].rounds == 1

    state = load_resume(csv)
    assert state.config == cfg
    result = run(state.config, log=lambda m: None, resume=state)
    rows = {r.variant: r for r in result.rows}
    assert [r.status for r in rows.values()] == ["ok", "ok", "ok"]
    assert {v: r.rounds for v, r in rows.items()} == {v: 2 for v in rows}  # no round lost, none counted twice
    assert "interrupted" not in rows["interrupt_second:fp32"].note
    assert sorted((rec.round, rec.row["variant"]) for rec in read_journal(result.journal_path)
                  if rec.status == "ok") == sorted((r, v) for r in (0, 1) for v in rows)


def test_resuming_a_finished_run_changes_nothing_and_a_torn_journal_line_is_rerun(tmp_path):
    cfg = validate_config(_config(tmp_path, ["pytorch:fp32", "null:fp32"], batches=[1], isolation="none"))
    first = run(cfg, log=lambda m: None)
    again = run(cfg, log=lambda m: None, resume=load_resume(first.csv_path))
    assert [r.cell_id for r in again.rows] == [r.cell_id for r in first.rows]
    assert again.rows[0].latency_p50_ms == first.rows[0].latency_p50_ms  # replayed, not measured again
    assert len(read_journal(first.journal_path)) == 2

    # the machine died while the last line was being written: that cell runs again
    text = first.journal_path.read_text()
    first.journal_path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:40])
    repaired = run(cfg, log=lambda m: None, resume=load_resume(first.csv_path.with_suffix(".json")))
    assert [r.status for r in repaired.rows] == ["ok", "ok"]
    assert len(read_journal(first.journal_path)) == 2


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    with pytest.raises(InfertuneError, match="no resumable run"):
        load_resume(tmp_path)
    cfg = validate_config(_config(tmp_path, ["null:fp32"], batches=[1], isolation="none"))
    result = run(cfg, log=lambda m: None)
    with pytest.raises(InfertuneError, match="every run in .* is complete"):
        load_resume(result.csv_path.parent)
    doc = json.loads(result.json_path.read_text())
    doc["run"]["model_digest"] = "0" * 16
    result.json_path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="weights now differ"):
        run(cfg, log=lambda m: None, resume=load_resume(result.csv_path))
    result.journal_path.unlink()
    with pytest.raises(InfertuneError, match="has no journal"):
        load_resume(result.csv_path)


def test_resume_with_flags_that_change_the_config_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "infertune", "run", "--resume", "results", "--batch-size", "4"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2
    assert "--resume continues a run with its saved config; drop --batch-size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_signal_during_a_row_write_waits_for_the_write_and_repeats_are_ignored():
    from infertune import interrupts

    steps = []
    with pytest.raises(RunInterrupted) as info, interrupts.catch_signals():
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("journal")  # the handler ran, but held the signal: the write goes on
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("csv")
        steps.append("never")
    assert steps == ["journal", "csv"] and info.value.signal_name == "SIGTERM" and info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handlers are back


OPENVINO_THEN_CTRL_C = """
import os, signal, sys, tempfile, time
import numpy as np
from infertune import interrupts
from infertune.backends.base import PrepareContext
from infertune.backends.registry import get_backend
from infertune.cache import ArtifactCache
from infertune.testing import tiny_convnet

root = tempfile.mkdtemp()

def ctx(batch):
    return PrepareContext(model=tiny_convnet(), example_input=np.zeros((batch, 3, 32, 32), np.float32),
                          precision="fp32", options={}, device="cpu", threads=1, cache=ArtifactCache(root, "tiny"),
                          calibration=lambda n: np.zeros((n, 3, 32, 32), np.float32), log=lambda m: None)

def two_cells():  # two compiled models, destroyed on return
    first = get_backend("openvino").prepare(ctx(2))
    first(first.to_native(np.zeros((2, 3, 32, 32), np.float32)))
    second = get_backend("openvino").prepare(ctx(3))

two_cells()
try:
    with interrupts.catch_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
except interrupts.RunInterrupted:
    print("stopped cleanly")
"""


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_ctrl_c_after_in_process_openvino_cells_stops_cleanly(tmp_path):
    """OpenVINO's CPU plugin leaves a freed alternate signal stack installed once two compiled models are
    destroyed; without ``interrupts.repair_signal_stack`` the next Ctrl-C is a segfault (exit -11)."""
    script = tmp_path / "probe.py"
    script.write_text(OPENVINO_THEN_CTRL_C)
    proc = subprocess.run([sys.executable, "-W", "ignore", str(script)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0 and "stopped cleanly" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
