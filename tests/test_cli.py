"""The CLI and the seed's two scripts end to end on the tiny model, re-reading the files they wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infertune.results import read_rows, read_samples

REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = {
    "model": {"name": "infertune.testing:tiny_convnet", "pretrained": False, "input_shape": [1, 3, 32, 32]},
    "benchmark": {"warmup_iterations": 1, "benchmark_iterations": 3, "min_time_s": 0.0,
                  "batch_sizes": [1, 2, 4], "device": "cpu", "isolation": "none"},
    "optimization": {"variants": ["pytorch:fp32", "null:fp32", "tensorrt:fp16"]},
}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "my_config.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


def test_benchmark_all_with_config_and_batch_size_flag(tmp_path, tiny_config):
    proc = _run([str(REPO / "benchmark_all.py"), "--config", str(tiny_config), "--batch-size", "1", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    csvs = list((tmp_path / "results").glob("benchmark_results_*.csv"))
    assert len(csvs) == 1
    rows = read_rows(csvs[0])
    assert sorted({r.batch_size for r in rows}) == [1, 2]  # the flag overrode the file's [1, 2, 4]
    trt = [r for r in rows if r.variant == "tensorrt:fp16"]
    assert trt and all(r.status == "unavailable" and r.error for r in trt)
    # the seed's table columns, the unavailable reason, and the files' names are printed
    for text in ("Format", "Latency (ms)", "Throughput", "Speedup", "unavailable", csvs[0].name):
        assert text in proc.stdout
    doc = json.loads(csvs[0].with_suffix(".json").read_text())
    assert doc["config"]["benchmark"]["batch_sizes"] == [1, 2]
    assert doc["environment"]["python"]
    eager = next(r for r in rows if r.variant == "pytorch:fp32" and r.batch_size == 2)
    assert len(read_samples(csvs[0])[eager.cell_id]) == eager.iterations
    assert (tmp_path / "results" / f"{csvs[0].stem}.config.yaml").is_file()

    # the seed's visualiser reads that CSV and writes charts and a page
    vis = _run([str(REPO / "visualize_results.py"), "--input", str(csvs[0])], tmp_path)
    assert vis.returncode == 0, vis.stderr
    html = next((tmp_path / "results").rglob("report.html"))
    assert "pytorch:fp32" in html.read_text()
    assert list((tmp_path / "results").rglob("*.png"))


def test_infertune_run_uses_cwd_config_yaml_and_python_api_reads_it(tmp_path, tiny_config):
    (tmp_path / "config.yaml").write_text(tiny_config.read_text())
    proc = _run(["-m", "infertune", "run", "--variants", "pytorch:fp32", "--batch-size", "2", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    import infertune

    csv = next((tmp_path / "results").glob("*.csv"))
    df = infertune.load_results(csv)
    assert list(df["variant"]) == ["pytorch:fp32"] and df.loc[0, "status"] == "ok"
    assert df.loc[0, "model"] == "infertune.testing:tiny_convnet"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--batch-size", "0"], "batch size must be >= 1"),
        (["--batch-size", "x"], "must be a whole number"),
        (["--model", "resnet5O"], "Did you mean resnet50"),
        (["--variants", "onnxrunTime:fp32"], "unknown backend 'onnxrunTime'"),
        (["--variants", "pytorch:fp33"], "unknown precision 'fp33'"),
        (["--config", "missing.yaml"], "does not exist"),
    ],
)
def test_bad_input_gets_one_clear_message_and_no_traceback(tmp_path, args, expected):
    proc = _run(["-m", "infertune", "run", "--quiet", *args], tmp_path)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_misspelt_config_key_suggests_the_right_one(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmark:\n  batch_size: [1]\n")
    proc = _run([str(REPO / "benchmark_all.py"), "--config", str(bad)], tmp_path)
    assert proc.returncode == 2
    assert "unknown key 'benchmark.batch_size'" in proc.stderr and "batch_sizes" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_of_a_missing_file_is_a_clear_error(tmp_path):
    proc = _run([str(REPO / "visualize_results.py"), "--input", "results/nope.csv"], tmp_path)
    assert proc.returncode == 2 and "nope.csv" in proc.stderr and "Traceback" not in proc.stderr


def test_backends_command_lists_every_backend_with_availability(tmp_path):
    from infertune.backends.registry import list_backends

    proc = _run(["-m", "infertune", "backends"], tmp_path)
    assert proc.returncode == 0
    for name in list_backends():
        assert name in proc.stdout


def test_infertune_alone_explains_itself_and_version_and_help_say_what_it_is(capsys):
    from infertune import __version__
    from infertune.cli import main

    assert main([]) == 0  # prints help, runs nothing (benchmark_all.py is what runs the default job)
    out = capsys.readouterr().out
    assert out.startswith("usage: infertune") and "Find the fastest way to run a PyTorch model" in out
    assert "Command-line interface" not in out and "argument parsing" not in out
    for command in ("run", "verify", "report", "compare", "backends", "env"):
        assert f"\n    {command} " in out
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"infertune {__version__}"


def test_env_is_a_readable_table_and_json_on_request(capsys):
    from infertune.cli import main
    from infertune.env import capture

    assert main(["env"]) == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].startswith("CPU ") and "{" not in table
    assert any(ln.startswith("INT8 dot product (VNNI/AMX)") for ln in lines)
    assert "Libraries" in lines and any(ln.split() == ["torch", capture()["libraries"]["torch"]] for ln in lines)
    assert main(["env", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cpu_model"] == capture()["cpu_model"] and "libraries" in doc
