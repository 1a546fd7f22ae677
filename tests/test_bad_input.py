"""Bad input gets one clear error before any long work: exit code 2, no traceback, no result files.

(An invalid config lists every wrong key, one line each; every other error is one line.)
"""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from infertune import preflight
from infertune.config import validate_config
from infertune.errors import ConfigError, InfertuneError, ModelError
from infertune.models import load_model

TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}
QUICK = {"warmup_iterations": 0, "benchmark_iterations": 1, "min_time_s": 0.0, "device": "cpu",
         "batch_sizes": [1], "isolation": "none"}


class _RunsCode:
    """Unpickling this runs a shell command: what a hostile "weights" file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_config(tmp_path: Path, **sections) -> Path:
    doc = {"model": TINY, "benchmark": QUICK, "optimization": {"variants": ["null:fp32"]},
           "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")}}
    for name, value in sections.items():
        doc[name] = {**doc.get(name, {}), **value}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _setup_bad_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  name: resnet18\n   pretrained: true\n")
    return path, "config.yaml is not valid YAML at line 3, column 14: mapping values are not allowed here"


def _setup_shape(tmp_path):
    return _write_config(tmp_path, model={"input_shape": [1, 5, 32, 32]}), \
        "infertune.testing:tiny_convnet cannot take inputs of shape [1, 5, 32, 32]"


def _setup_output_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    path = _write_config(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["output"]["dir"] = str(tmp_path / "taken")
    path.write_text(yaml.safe_dump(doc))
    return path, "output.dir " + str(tmp_path / "taken") + " is a file, not a folder"


def _setup_hostile_weights(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(pickle.dumps({"conv.weight": _RunsCode(tmp_path / "pwned")}, protocol=2))
    return _write_config(tmp_path, model={"weights": str(weights)}), "it asks to import and call posix.system"


def _setup_huge_batch(tmp_path):
    return _write_config(tmp_path, benchmark={"batch_sizes": [10**9]}), "GB for the input alone"


def _setup_limit_without_workers(tmp_path):
    return _write_config(tmp_path, benchmark={"memory_limit_mb": 1024}), \
        "memory_limit_mb applies to worker processes: set isolation: process"


@pytest.mark.parametrize("setup", [_setup_bad_yaml, _setup_shape, _setup_output_is_a_file, _setup_hostile_weights,
                                   _setup_huge_batch, _setup_limit_without_workers])
def test_the_cli_prints_one_line_and_exits_2_before_any_work(tmp_path, setup):
    config, expected = setup(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "infertune", "run", "-q", "--config", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and expected in proc.stderr, proc.stderr  # config errors list each key
    assert not list(tmp_path.rglob("benchmark_results_*"))  # nothing half-written
    assert not (tmp_path / "pwned").exists()  # the hostile pickle never ran


@pytest.fixture
def tiny_state(tmp_path):
    from infertune.testing import tiny_convnet

    return tiny_convnet(), tmp_path


def test_weights_files_that_are_not_plain_state_dicts_are_refused(tiny_state):
    model, tmp_path = tiny_state
    whole = tmp_path / "whole_model.pt"
    torch.save(model, whole)
    with pytest.raises(ModelError, match=r"asks to import and call torch\.nn\.modules\.container\.Sequential"):
        load_model("infertune.testing:tiny_convnet", weights=str(whole))

    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ModelError, match="the file is truncated, corrupt or not a torch.save file"):
        load_model("infertune.testing:tiny_convnet", weights=str(truncated))

    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(ModelError, match="does not fit the model"):
        load_model("infertune.testing:tiny_convnet", weights=str(other))

    not_tensors = tmp_path / "numbers.pt"
    torch.save({"lr": 0.1, "epoch": 3}, not_tensors)
    with pytest.raises(ModelError, match="not a state_dict"):
        load_model("infertune.testing:tiny_convnet", weights=str(not_tensors))

    assert load_model("infertune.testing:tiny_convnet", weights=str(good)).weights.startswith("file:")


def test_a_factory_that_raises_is_one_clear_error():
    with pytest.raises(ModelError, match=r"calling tests\.fixture_models:broken_factory\(\) to build the model raised"):
        load_model("tests.fixture_models:broken_factory")


def test_unwritable_output_and_full_disks_are_found_up_front(tmp_path, monkeypatch):
    import shutil
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(ConfigError, match=r"cannot write to output.dir .* \(Read-only file system\): set output.dir"):
        preflight.writable_dir(tmp_path / "out", "output.dir")
    monkeypatch.undo()

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=5_000_000))
    cfg = validate_config({"model": TINY, "output": {"dir": str(tmp_path / "r"), "models_dir": str(tmp_path / "m")}})
    with pytest.raises(ConfigError, match=r"only 5 MB free on the disk holding output.dir .* needs about 20 MB"):
        preflight.check_output(cfg)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder; the monkeypatched test covers it")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(ConfigError, match="Permission denied"):
        preflight.writable_dir(folder, "output.dir")


def test_a_failed_result_write_mid_run_is_a_clear_error(tmp_path, monkeypatch):
    from infertune.journal import Journal
    from infertune.pipeline import run

    def disk_full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Journal, "append", disk_full)
    cfg = validate_config({"model": TINY, "benchmark": QUICK, "optimization": {"variants": ["null:fp32"]},
                           "output": {"dir": str(tmp_path / "r"), "models_dir": str(tmp_path / "m")}})
    with pytest.raises(InfertuneError, match=r"cannot write the results to .* \(No space left on device\).*--resume"):
        run(cfg, log=lambda m: None)


def test_a_damaged_cached_onnx_export_is_detected_and_rebuilt(make_ctx, tmp_path):
    pytest.importorskip("onnx")
    from infertune.backends.onnx_export import export_onnx

    logs: list[str] = []
    ctx = make_ctx(cache_root=tmp_path / "models")
    ctx.cache.warn = logs.append
    first = export_onnx(ctx)
    assert not first.cache_hit
    data = first.path.read_bytes()

    first.path.write_bytes(data[: len(data) // 2])  # a full disk or an interrupted copy truncated it
    again = export_onnx(ctx)
    assert not again.cache_hit and again.path.read_bytes() != data[: len(data) // 2]
    assert any("was damaged (model.onnx has" in m and "rebuilding it" in m for m in logs)

    # garbage of the right size: the recorded SHA-256 catches it
    again.path.write_bytes(b"\0" * len(again.path.read_bytes()))
    third = export_onnx(ctx)
    assert not third.cache_hit
    assert any("model.onnx does not match its recorded SHA-256" in m for m in logs)
    assert export_onnx(ctx).cache_hit  # the rebuilt entry is good
