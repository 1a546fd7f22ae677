"""Security basics: names from the config never place files outside their folder, reports escape what
they show, and no pickle of data from outside the run is ever loaded."""

from __future__ import annotations

import re
from pathlib import Path

from infertune.cache import ArtifactCache
from infertune.results import ResultFiles

SRC = Path(__file__).resolve().parents[1] / "src" / "infertune"
HOSTILE = "../../../etc/<img src=x onerror=alert(1)>|`rm -rf`"


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def test_cache_paths_stay_inside_the_cache_root(tmp_path):
    root = tmp_path / "models"
    cache = ArtifactCache(root, f"{HOSTILE}-0123")
    for backend in ("onnx", "../../escape", "..", "/abs/path", ""):
        entry = cache.entry(backend, options=HOSTILE)
        assert _inside(entry.path, root), entry.path
        entry.file("model.onnx").write_text("x")
        entry.commit()
    assert not list(tmp_path.glob("escape*")) and all(_inside(p, root) for p in tmp_path.rglob("*") if p.is_file()
                                                       and "models" in p.parts)


def _hostile_report(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    from infertune.report import build_report
    from infertune.results import ResultRow

    results = tmp_path / "results"
    files = ResultFiles(results / "benchmark_results_x.csv", results / "benchmark_results_x.json")
    for variant, status, p50 in (("pytorch:fp32", "ok", 10.0), ("onnxruntime:fp32", "ok", 5.0),
                                 ("openvino:fp32", "failed", None)):
        backend = variant.split(":")[0]
        row = ResultRow(model=HOSTILE, variant=variant, backend=backend, precision="fp32", options="", batch_size=1,
                        device="cpu", status=status, latency_p50_ms=p50, latency_mean_ms=p50,
                        latency_scope="end_to_end", error="" if p50 else "<script>alert(1)</script>")
        files.add(row, [p50] * 5 if p50 else None)
    return results, build_report(files.csv_path)


def test_reports_of_hostile_names_stay_in_their_folder_and_the_html_escapes_them(tmp_path):
    results, paths = _hostile_report(tmp_path)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(_inside(p, results) for p in written), written
    assert all(_inside(p, results) for p in paths.values())
    html = paths["html"].read_text()
    assert "<img src=x" not in html and "<script>alert(1)" not in html
    assert "&lt;img src=x" in html


def test_the_markdown_report_escapes_hostile_names(tmp_path):
    _results, paths = _hostile_report(tmp_path)
    markdown = paths["markdown"].read_text()
    assert "<img src=x" not in markdown and "<script>" not in markdown  # markdown viewers render raw HTML


UNSAFE_LOADS = [
    (r"\bpickle\.loads?\(", "pickle.load"),
    (r"\b(?:cloudpickle|dill|joblib|marshal)\.loads?\(", "another unpickler"),
    (r"allow_pickle\s*=\s*True", "numpy allow_pickle=True"),
    (r"\byaml\.(?:load|unsafe_load|full_load)\(", "yaml.load without SafeLoader"),
    (r"(?<![.\w])(?:eval|exec)\(", "eval/exec of text"),
]


def test_no_source_file_unpickles_untrusted_data():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for pattern, what in UNSAFE_LOADS:
            offenders += [f"{path.name}: {what}" for _ in re.finditer(pattern, text)]
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):  # every torch.load is weights-only
            if "weights_only=True" not in call.group(1):
                offenders.append(f"{path.name}: torch.load without weights_only=True")
    assert not offenders, offenders
    assert "weights_only=True" in (SRC / "models.py").read_text()
