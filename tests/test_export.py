"""Export end to end on the tiny model: a real run, then export -> load in a fresh process -> the verified outputs.

ONNX and OpenVINO exports are loaded in a subprocess where importing torch fails, and must neither
need torch nor import infertune's model code. The round trip's figures must equal the figures the
benchmark recorded for the same row (same artifact, same runtime, same reference), which shows the
export computes what was measured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from infertune.cache import file_sha256 as sha256_file
from infertune.cli import main as cli_main
from infertune.config import validate_config
from infertune.errors import InfertuneError
from infertune.export.artifact import ArtifactError
from infertune.export.build import RoundTripError, export_run
from infertune.export.load import ExportIntegrityError, load
from infertune.export.manifest import MANIFEST_NAME, read_manifest
from infertune.export.select import SelectionError
from infertune.pipeline import run
from infertune.report.view import fastest_passing
from infertune.results import ResultRow, read_rows

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino/nncf not installed: pip install 'infertune[openvino]'")
VARIANTS = ["pytorch:fp32", "onnxruntime:fp32", "onnxruntime:int8", "torchscript:fp32",
            *(["openvino:fp32", "openvino:int8"] if HAS_OPENVINO else [])]


@dataclass(frozen=True)
class Bench:
    json_path: Path
    models: Path
    rows: list[ResultRow]

    def row(self, variant: str, batch: int = 2) -> ResultRow:
        return next(r for r in self.rows if r.variant == variant and r.batch_size == batch)


def _config(root: Path, variants: list[str], batches: list[int], models: Path | None = None, device: str = "cpu",
            **verify: object) -> object:
    return validate_config({
        "model": TINY,
        "benchmark": {"batch_sizes": batches, "warmup_iterations": 1, "benchmark_iterations": 3, "min_time_s": 0.0,
                      "isolation": "none", "device": device, "threads": 1},
        "optimization": {"variants": variants},
        "output": {"dir": str(root / "results"), "models_dir": str(models or root / "models")},
        **({"verify": verify} if verify else {}),
    })


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Bench:
    root = tmp_path_factory.mktemp("run")
    result = run(_config(root, VARIANTS, [1, 2]), log=lambda m: None)
    return Bench(result.json_path, root / "models", result.rows)


def _quiet(_message: str) -> None:
    pass


def _in_subprocess(code: str, *args: str, block: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with ``block`` modules made unimportable."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in block)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


LOAD_AND_RUN = """
import json
import numpy as np
import infertune
model = infertune.load(sys.argv[1])
np.save(sys.argv[3], model(np.load(sys.argv[2])))
fid = model.check()
heavy = [m for m in ("torch", "infertune.models", "infertune.testing", "infertune.pipeline", "infertune.cell",
                     "infertune.backends.base") if sys.modules.get(m) is not None]
print(json.dumps({"imported": heavy, "ok": fid.ok, "cosine_min": fid.cosine_min, "max_abs_err": fid.max_abs_err}))
"""


@pytest.mark.parametrize("variant", [
    "onnxruntime:fp32", "onnxruntime:int8", "torchscript:fp32",
    pytest.param("openvino:fp32", marks=needs_openvino), pytest.param("openvino:int8", marks=needs_openvino),
])
def test_export_loads_in_a_fresh_process_and_gives_the_benchmarked_outputs(bench, tmp_path, variant):
    import torch

    out = tmp_path / "export"
    manifest = export_run(bench.json_path, out, variant=variant, log=_quiet).manifest
    # numpy and the runtime are enough (docs/export.md): torch and infertune's other dependencies are blocked
    blocked = () if manifest.runtime.needs_torch else ("torch", "torchvision", "pydantic", "yaml", "pandas", "scipy",
                                                       "matplotlib", "rich", "onnx", "PIL", "skimage")
    batch = np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", batch)
    proc = _in_subprocess(LOAD_AND_RUN, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), block=blocked)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if blocked:  # the runtime alone: no torch, no model code, not even the backends
        assert info["imported"] == []
    # the same figures as the benchmark recorded for this row: the same artifact computing the same outputs
    recorded = bench.row(variant)
    assert info["ok"] is True
    assert info["cosine_min"] == pytest.approx(recorded.cosine_min, rel=1e-9, abs=1e-12)
    assert info["max_abs_err"] == pytest.approx(recorded.max_abs_err, rel=1e-6, abs=1e-9)
    # and on inputs the export never saw, outputs close to the FP32 model's
    from infertune.testing import tiny_convnet

    with torch.inference_mode():
        expected = tiny_convnet()(torch.from_numpy(batch)).numpy()
    got = np.load(tmp_path / "y.npy")
    assert got.shape == expected.shape
    if manifest.precision == "fp32":
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    else:
        cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        assert cos.min() > 0.98


def test_manifest_says_what_the_export_is(bench, tmp_path):
    result = export_run(bench.json_path, tmp_path / "best", variant="onnxruntime:fp32", log=_quiet)
    m = read_manifest(tmp_path / "best")
    (tmp_path / "plain").mkdir()  # the folder is as readable as any folder the user makes
    assert (tmp_path / "best").stat().st_mode == (tmp_path / "plain").stat().st_mode
    row = bench.row("onnxruntime:fp32")
    assert (m.variant, m.model, m.weights, m.precision) == ("onnxruntime:fp32", row.model, "random", "fp32")
    assert m.runtime.format == "onnx" and m.runtime.module == "onnxruntime" and not m.runtime.needs_torch
    import onnxruntime

    assert m.runtime.version == onnxruntime.__version__
    assert m.runtime.options["intra_op_num_threads"] == 1 and m.runtime.options["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert m.input.shape == [None, 3, 32, 32] and m.input.batch_sizes is None and m.input.name == "input"
    assert m.outputs == [{"name": "output", "shape": ["N", 10]}]
    assert m.preprocessing["center_crop"] == [32, 32] and m.preprocessing["mean"] == [0.485, 0.456, 0.406]
    assert m.performance["latency_p50_ms"] == row.latency_p50_ms and m.performance["batch_size"] == 2
    assert [b["batch_size"] for b in m.performance["by_batch_size"]] == [1, 2]
    assert m.fidelity["at_benchmark"]["cosine_min"] == row.cosine_min and m.fidelity["round_trip"]["ok"] is True
    assert m.verification.tolerance["cosine_min"] == 0.9999 and m.verification.samples == 8
    assert "isa" in m.environment and m.source["cell"] == row.cell_id
    assert m.forced == "" and m.model_digest == json.loads(bench.json_path.read_text())["run"]["model_digest"]
    # every shipped file is listed with its real hash; the entry point is the portable ONNX export
    names = sorted(p.name for p in (tmp_path / "best").iterdir())
    assert names == ["README.md", MANIFEST_NAME, "model.onnx", "verification.npz"]
    assert {f.name: f.sha256 for f in m.files} == {n: sha256_file(tmp_path / "best" / n)
                                                   for n in ("model.onnx", "verification.npz")}
    readme = (tmp_path / "best" / "README.md").read_text()
    assert 'infertune.load("best")' in readme and 'ort.InferenceSession("best/model.onnx"' in readme
    assert result.folder == tmp_path / "best"


def test_default_export_is_the_fastest_that_kept_the_predictions(bench, tmp_path):
    lines: list[str] = []
    m = export_run(bench.json_path, tmp_path / "best", log=lines.append).manifest
    exportable = [r for r in bench.rows if r.batch_size == 2 and r.backend != "pytorch"]
    assert m.variant == fastest_passing(exportable).variant
    assert "largest batch size measured" in m.selection and "largest batch size measured" in lines[0]


def test_loaded_model_takes_torch_tensors_and_checks_its_input(bench, tmp_path):
    import torch

    export_run(bench.json_path, tmp_path / "ts", variant="torchscript:fp32", log=_quiet)
    model = load(tmp_path / "ts")
    assert model.batch_sizes == [2]  # traced at batch 2: the manifest says so and the loader holds to it
    out = model(torch.zeros(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    with pytest.raises(InfertuneError, match="accepts batch size 2 only"):
        model(np.zeros((3, 3, 32, 32), np.float32))
    with pytest.raises(InfertuneError, match=r"shaped \(2, 3, 32, 32\); got \(2, 3, 16, 16\)"):
        model(np.zeros((2, 3, 16, 16), np.float32))


def test_eager_pytorch_is_refused_with_a_clear_message(bench, tmp_path, capsys):
    code = cli_main(["export", str(bench.json_path), "--to", str(tmp_path / "x"), "--variant", "pytorch:fp32"])
    err = capsys.readouterr().err
    assert code == 2 and "eager PyTorch converts nothing" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_fidelity_failed_variant_is_refused_unless_forced(bench, tmp_path):
    # a second run, same cache: the ORT INT8 artifact is reused, judged against a bound it cannot meet
    strict = run(_config(tmp_path, ["onnxruntime:int8"], [2], models=bench.models,
                         tolerances={"int8": {"cosine_min": 0.99999999}}), log=_quiet)
    assert strict.rows[0].status == "fidelity_failed" and strict.rows[0].artifact
    with pytest.raises(SelectionError, match="fidelity_failed.*--force"):
        export_run(strict.json_path, tmp_path / "refused", variant="onnxruntime:int8", log=_quiet)
    assert not (tmp_path / "refused").exists()
    lines: list[str] = []
    m = export_run(strict.json_path, tmp_path / "forced", variant="onnxruntime:int8", force=True, log=lines.append).manifest
    assert "fidelity_failed" in m.forced and m.fidelity["round_trip"]["ok"] is False
    assert "Exported with --force" in (tmp_path / "forced" / "README.md").read_text()
    assert any("--force" in line for line in lines)


def test_the_round_trip_judges_the_export_itself_not_the_row(bench, tmp_path):
    """A results file whose saved tolerance the variant does not meet (the row still says ok): export fails."""
    doc = json.loads(bench.json_path.read_text())
    doc["config"]["verify"]["tolerances"] = {"int8": {"cosine_min": 0.99999999}}
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(doc))
    with pytest.raises(RoundTripError, match=r"does not reproduce the verified outputs: cosine_min 0\.9\d+ < "):
        export_run(doctored, tmp_path / "out", variant="onnxruntime:int8", log=_quiet)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_a_tampered_export_is_rejected_on_load(bench, tmp_path):
    export_run(bench.json_path, tmp_path / "best", variant="onnxruntime:fp32", log=_quiet)
    model_file = tmp_path / "best" / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ExportIntegrityError, match=r"model.onnx does not match the sha256 recorded in infertune.json"):
        load(tmp_path / "best")


def test_a_changed_cache_entry_is_not_exported(bench, tmp_path):
    """A cached file whose size or recorded sha256 no longer matches: refused, target untouched."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(bench.models, models)
    row = bench.row("onnxruntime:fp32")
    entry = next(models.glob("*/onnx/*"))
    onnx_file = entry / "model.onnx"
    manifest_path = entry / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    doc["files"]["model.onnx"] = {"size": onnx_file.stat().st_size, "sha256": sha256_file(onnx_file)}
    manifest_path.write_text(json.dumps(doc))
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its recorded sha256.*not the artifact that was measured"):
        export_run(bench.json_path, tmp_path / "out", variant=row.variant, models_dir=models, log=_quiet)
    onnx_file.write_bytes(bytes(data[:-10]))
    with pytest.raises(ArtifactError, match=r"has \d+ bytes but the cache recorded \d+"):
        export_run(bench.json_path, tmp_path / "out", variant=row.variant, models_dir=models, log=_quiet)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant,runtime", [
    ("onnxruntime:fp32", "onnxruntime"), pytest.param("openvino:fp32", "openvino", marks=needs_openvino)])
def test_a_missing_runtime_says_what_to_install(bench, tmp_path, variant, runtime):
    export_run(bench.json_path, tmp_path / "e", variant=variant, log=_quiet)
    code = "import infertune\ntry:\n    infertune.load(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    proc = _in_subprocess(code, str(tmp_path / "e"), block=(runtime, "torch"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("InfertuneError") and f"pip install {runtime}" in proc.stdout


def test_another_runtime_version_or_a_missing_cpu_feature_warns(bench, tmp_path):
    export_run(bench.json_path, tmp_path / "e", variant="onnxruntime:fp32", log=_quiet)
    path = tmp_path / "e" / MANIFEST_NAME
    doc = json.loads(path.read_text())
    doc["runtime"]["version"] = "0.0.1"
    doc["speed_depends_on"] = [{"what": "the imaginary ZZZ extension", "any_of": ["zzz_no_such_flag"]}]
    path.write_text(json.dumps(doc))
    with pytest.warns(RuntimeWarning) as caught:
        load(tmp_path / "e")
    messages = " | ".join(str(w.message) for w in caught)
    assert "measured and verified with 0.0.1" in messages
    if Path("/proc/cpuinfo").exists():
        assert "this CPU lacks the imaginary ZZZ extension" in messages


def test_cli_export_and_target_folder_rules(bench, tmp_path, capsys):
    assert cli_main(["export", str(bench.json_path.with_suffix(".csv")), "--to", str(tmp_path / "best"),
                     "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "at batch 1 (as asked (--batch-size))" in out and "round trip: cosine_min" in out
    assert read_manifest(tmp_path / "best").performance["batch_size"] == 1
    # an earlier export is replaced; any other folder is left alone
    assert cli_main(["export", str(bench.json_path), "--to", str(tmp_path / "best"),
                     "--variant", "onnxruntime:fp32"]) == 0
    assert read_manifest(tmp_path / "best").variant == "onnxruntime:fp32"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert cli_main(["export", str(bench.json_path), "--to", str(tmp_path / "mine")]) == 2
    assert "is not an infertune export" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_run_with_export_leaves_a_loadable_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli_main(["run", "--model", TINY["name"], "--input-shape", "1", "3", "32", "32", "--no-pretrained",
                     "--batch-size", "1", "--variants", "pytorch:fp32", "onnxruntime:fp32", "--warmup", "1",
                     "--iterations", "2", "--min-time", "0", "--isolation", "none", "-q", "--export", "best"])
    assert code == 0, capsys.readouterr().err
    assert "exporting onnxruntime:fp32" in capsys.readouterr().out
    rows = read_rows(next((tmp_path / "results").glob("*.csv")))
    assert next(r for r in rows if r.variant == "onnxruntime:fp32").artifact.endswith(".onnx")
    assert next(r for r in rows if r.variant == "pytorch:fp32").artifact == ""
    assert load(tmp_path / "best").check().ok


@pytest.mark.slow
def test_aoti_package_export(tmp_path):
    result = run(_config(tmp_path, ["aoti:fp32"], [1]), log=_quiet)
    if result.rows[0].status != "ok":
        pytest.skip(f"aoti:fp32 did not run here: {result.rows[0].error[:200]}")
    m = export_run(result.json_path, tmp_path / "aoti", log=_quiet).manifest
    assert m.runtime.format == "aoti-pt2" and m.entry_point == "model.pt2" and m.input.batch_sizes == [1]
    assert m.fidelity["round_trip"]["ok"] is True
    assert load(tmp_path / "aoti").check().ok


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["torchscript:fp16:cuda_graph", "tensorrt:fp16"])
def test_cuda_exports(tmp_path, variant):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    result = run(_config(tmp_path, [variant], [2], device="cuda"), log=_quiet)
    if result.rows[0].status != "ok":
        pytest.skip(f"{variant} did not run here: {result.rows[0].error[:200]}")
    m = export_run(result.json_path, tmp_path / "gpu", log=_quiet).manifest
    assert m.runtime.device == "cuda" and m.input.batch_sizes == [2]
    assert m.fidelity["round_trip"]["cosine_min"] == pytest.approx(result.rows[0].cosine_min, abs=1e-4)  # cuDNN may pick other kernels in another process
    model = load(tmp_path / "gpu")
    assert model.check().ok and model(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
