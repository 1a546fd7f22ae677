"""The fidelity stage: metrics per output, thresholds per precision (documented, overridable), real
verification photos disjoint from calibration, and broken variants caught with the right metric named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from infertune.config import tolerances, validate_config
from infertune.errors import ConfigError
from infertune.inputs import InputSource, resolve_source
from infertune.verify import (
    BOUNDS,
    DEFAULT_TOLERANCES,
    Tolerance,
    compare,
    degenerate_reason,
)
from tests.faulty_backends import registered

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}


def _cfg(tmp_path: Path, variants: list[str], model: dict | None = None, batches=(2,), **verify) -> object:
    return validate_config({
        "model": model or TINY,
        "benchmark": {"batch_sizes": list(batches), "isolation": "none", "device": "cpu"},
        "optimization": {"variants": variants},
        "verify": verify,
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })


# ---------------------------------------------------------------- metrics


def test_every_metric_per_output_and_the_worst_on_the_row():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 20))
    features = rng.standard_normal((6, 4, 3))
    out = {"logits": logits + 1e-3, "features": features * -1}  # the second output is broken
    fid = compare(out, {"logits": logits, "features": features}, DEFAULT_TOLERANCES["fp16"])
    by_name = {o.name: o for o in fid.outputs}
    assert set(by_name) == {"logits", "features"}
    assert by_name["logits"].cosine_min > 0.999 and by_name["features"].cosine_min == pytest.approx(-1.0)
    assert by_name["logits"].mean_abs_err == pytest.approx(1e-3, rel=1e-4)  # outputs are float32
    assert by_name["features"].top1_agreement is None  # not an (N, classes) output
    assert by_name["logits"].top1_agreement == 1.0 and by_name["logits"].top5_overlap == 1.0
    assert fid.cosine_min == pytest.approx(-1.0) and not fid.ok and "cosine_min" in fid.failed_metrics
    detail = json.loads(fid.as_row_fields()["fidelity_outputs"])
    assert [d["name"] for d in detail] == ["logits", "features"]


def test_top5_overlap_counts_shared_classes():
    ref = np.tile(np.arange(10.0), (2, 1))  # top-5 = classes 5..9
    out = ref.copy()
    out[:, [5, 6]] = -1  # two of the top-5 classes drop out, the top-1 stays
    fid = compare(out, ref, Tolerance(top5_min=0.9))
    assert fid.top1_agreement == 1.0 and fid.top5_overlap == pytest.approx(0.6)
    assert fid.failed_metrics == ("top5_overlap",) and fid.failures[0] == "top5_overlap 60.0% < 90.0%"


def test_an_all_zero_output_does_not_pass_as_cosine_one():
    ref = np.random.default_rng(1).standard_normal((3, 10))
    fid = compare(np.zeros_like(ref), ref, DEFAULT_TOLERANCES["int8"])
    assert fid.cosine_min == 0.0 and fid.sqnr_db == pytest.approx(0.0) and "cosine_min" in fid.failed_metrics


def test_a_variant_with_fewer_outputs_fails_naming_both_counts():
    ref = np.random.default_rng(2).standard_normal((4, 10))
    fid = compare(ref.copy(), {"a": ref, "b": ref[:, :3]}, DEFAULT_TOLERANCES["fp32"])
    assert not fid.ok and fid.failed_metrics == ("outputs",)
    assert fid.failures[0] == "the variant returns 1 output(s) (output), the reference 2 (a, b)"
    assert [o.name for o in fid.outputs] == ["a"]  # what does pair is still compared


def test_outputs_pair_by_name_whatever_their_order_else_by_order():
    rng = np.random.default_rng(3)
    ref = {"logits": rng.standard_normal((4, 10)), "features": rng.standard_normal((4, 6))}
    swapped = {"features": ref["features"].copy(), "logits": ref["logits"].copy()}
    assert compare(swapped, ref, DEFAULT_TOLERANCES["fp32"]).ok  # by name
    unnamed = [ref["logits"].copy(), ref["features"].copy()]  # a runtime's own names: by order
    fid = compare(unnamed, ref, DEFAULT_TOLERANCES["fp32"])
    assert fid.ok and [o.name for o in fid.outputs] == ["logits", "features"]
    assert not compare(unnamed[::-1], ref, DEFAULT_TOLERANCES["fp32"]).ok


def test_nan_and_inf_are_counted_per_output():
    rng = np.random.default_rng(4)
    ref = {"logits": rng.standard_normal((4, 10)), "features": rng.standard_normal((4, 6))}
    out = {"logits": ref["logits"].copy(), "features": ref["features"].copy()}
    out["features"][0, :3] = np.nan
    out["features"][1, 0] = np.inf
    out["features"][2, 0] = -np.inf
    fid = compare(out, ref, DEFAULT_TOLERANCES["fp16"])
    assert not fid.ok and fid.failed_metrics == ("outputs",)
    assert fid.failures == ("features: outputs hold 3 NaN and 2 inf of 24 values (overflow or invalid arithmetic)",)


# ---------------------------------------------------------------- thresholds


def test_thresholds_are_overridable_per_precision_and_validated():
    cfg = validate_config({"verify": {"tolerances": {"int8": {"cosine_min": 0.995, "top1_min": None},
                                                     "tf32": {"max_rel_err": 0.02}}}})
    tol = tolerances(cfg)
    assert tol["int8"].cosine_min == 0.995 and tol["int8"].top1_min is None  # null disables a bound
    assert tol["int8"].accuracy_ratio_min == DEFAULT_TOLERANCES["int8"].accuracy_ratio_min  # the rest kept
    assert tol["tf32"].max_rel_err == 0.02 and tol["fp32"] == DEFAULT_TOLERANCES["fp32"]
    with pytest.raises(ConfigError, match=r"Did you mean 'verify\.tolerances\.int8\.cosine_min'"):
        validate_config({"verify": {"tolerances": {"int8": {"cosin_min": 0.99}}}})
    with pytest.raises(ConfigError, match="top1_min"):
        validate_config({"verify": {"tolerances": {"int8": {"top1_min": 2}}}})
    with pytest.raises(ConfigError, match="verify.tolerances.int4"):
        validate_config({"verify": {"tolerances": {"int4": {"top1_min": 0.5}}}})


def test_the_documented_threshold_table_is_the_code_s():
    """docs/fidelity.md's table must say exactly what DEFAULT_TOLERANCES enforces."""
    text = (REPO / "docs" / "fidelity.md").read_text()
    table = [ln for ln in text.splitlines() if re.match(r"\|\s*`(fp32|tf32|fp16|bf16|int8)`", ln)]
    assert len(table) == len(DEFAULT_TOLERANCES)
    header = next(ln for ln in text.splitlines() if ln.startswith("| precision"))
    keys = [re.sub(r"[`\s]", "", c) for c in header.strip("|").split("|")][1:]
    assert set(keys) >= set(BOUNDS) | {"accuracy_ratio_min"}
    for line in table:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        tol = DEFAULT_TOLERANCES[cells[0].strip("`")]
        for key, cell in zip(keys, cells[1:]):
            expected = getattr(tol, key)
            assert (cell == "—") if expected is None else float(cell.split()[0]) == expected, (cells[0], key, cell)


# ---------------------------------------------------------------- inputs


def test_shipped_photos_verify_and_other_photos_calibrate():
    from infertune import photos

    source, note = resolve_source((3, 48, 48), verify_count=8)
    assert note == "" and source.source_kind == "photos"
    verify, calib = source.verification(8), source.calibration(20)
    assert verify.shape == (8, 3, 48, 48) and calib.shape == (20, 3, 48, 48)
    assert not set(photos.verification_files()) & set(photos.calibration_files())
    assert not any(np.allclose(c, v) for c in calib for v in verify)
    assert np.allclose(verify[6], verify[0][:, :, ::-1])  # sample 7 = the first photo, mirrored
    assert "chelsea" in source.describe_verification(8) and "+ 2 mirrored" in source.describe_verification(8)
    assert "hubble_deep_field" in source.describe_calibration(20) and "crops/flips" in source.describe_calibration(20)
    # real photos are not noise: a normalised natural image has most values within a few std of 0
    assert abs(float(verify.mean())) < 1.5 and 0.3 < float(verify.std()) < 2.0


def test_photos_fall_back_to_synthetic_with_a_recorded_reason():
    source, note = resolve_source((4, 16, 16))
    assert source.source_kind == "synthetic" and "4-channel" in note
    assert source.describe_verification(2).startswith("synthetic")


def test_calibration_images_must_not_overlap_verification(tmp_path):
    from infertune import photos

    shared = tmp_path / "calib"
    shared.mkdir()
    (shared / "cat.png").write_bytes(photos.verification_files()[0].read_bytes())
    source = InputSource(shape=(3, 32, 32), kind="photos", calibration_images=str(shared))
    with pytest.raises(ConfigError, match="shares 1 image"):
        source.calibration(4)
    (shared / "cat.png").write_bytes(photos.calibration_files()[0].read_bytes())
    assert source.calibration(4).shape == (4, 3, 32, 32)
    before = source.calibration_identity()
    (shared / "more.png").write_bytes(photos.calibration_files()[1].read_bytes())
    assert source.calibration_identity() != before  # other calibration data, other INT8 cache entry


# ---------------------------------------------------------------- broken variants, through the pipeline


@pytest.fixture(scope="module")
def verified_rows(tmp_path_factory):
    """One `infertune verify` pass (no timing) over correct and deliberately broken variants."""
    from infertune.pipeline import run

    tmp = tmp_path_factory.mktemp("fidelity")
    variants = ["pytorch:fp32", "onnxruntime:fp32", "onnxruntime:int8", "faulty:fp32:perturb=0.001",
                "faulty:fp32:unnormalised", "faulty:int8:calibration=zeros", "faulty:int8:calibration=huge"]
    with registered():
        result = run(_cfg(tmp, variants), log=lambda m: None, measure=False)
    return {r.variant: r for r in result.rows}, result


def test_correct_variants_pass_on_real_photos(verified_rows):
    rows, result = verified_rows
    for name in ("pytorch:fp32", "onnxruntime:fp32", "onnxruntime:int8"):
        assert rows[name].status == "ok" and rows[name].fidelity_ok, rows[name].error
        assert rows[name].verify_inputs.startswith("photos: chelsea")
    assert rows["onnxruntime:int8"].calibration_inputs.startswith("photos: hubble_deep_field")
    assert rows["onnxruntime:fp32"].calibration_inputs == ""  # no calibration, none claimed
    # verify mode: nothing timed, files named for what they hold
    assert all(r.latency_p50_ms is None and r.first_inference_ms is None for r in rows.values())
    assert result.csv_path.name.startswith("verify_results_")


def test_perturbed_weights_are_caught_by_the_relative_error_bound(verified_rows):
    row = verified_rows[0]["faulty:fp32:perturb=0.001"]
    # 0.1% weight noise keeps cosine at 0.99999 (above fp32's 0.9999): only the error bound sees it
    assert row.status == "fidelity_failed" and row.error.startswith("max_rel_err") and "cosine_min" not in row.error
    assert row.cosine_min > DEFAULT_TOLERANCES["fp32"].cosine_min


def test_wrong_preprocessing_is_caught_by_cosine(verified_rows):
    row = verified_rows[0]["faulty:fp32:unnormalised"]
    assert row.status == "fidelity_failed" and "cosine_min" in row.error and row.fidelity_ok is False


@pytest.mark.parametrize("fault", ["zeros", "huge"])
def test_int8_with_a_corrupted_calibration_set_is_caught(verified_rows, fault):
    row = verified_rows[0][f"faulty:int8:calibration={fault}"]
    assert row.status == "fidelity_failed"
    assert "cosine_min" in row.error and "top1_agreement" in row.error
    good = verified_rows[0]["onnxruntime:int8"]
    assert row.sqnr_db < good.sqnr_db - 10  # an order of magnitude more noise than the good calibration


def test_a_two_output_model_is_verified_per_output(tmp_path):
    from infertune.pipeline import run

    model = {**TINY, "name": "tests.fixture_models:two_outputs"}
    with registered():
        rows = run(_cfg(tmp_path, ["pytorch:fp32", "faulty:fp32:perturb=0.05"], model=model), log=lambda m: None,
                   measure=False).rows
    eager, broken = rows
    assert eager.status == "ok" and [d["name"] for d in json.loads(eager.fidelity_outputs)] == ["output0", "output1"]
    detail = {d["name"]: d for d in json.loads(broken.fidelity_outputs)}
    assert broken.status == "fidelity_failed"
    # the row carries the worst output's value of each metric
    assert broken.cosine_min == min(d["cosine_min"] for d in detail.values())
    assert detail["output0"]["top1_agreement"] is not None


# ---------------------------------------------------------------- random weights are labelled


def test_random_weights_are_labelled_in_the_tables(verified_rows):
    from rich.console import Console

    from infertune.report.fidelity import fidelity_table
    from infertune.report.table import markdown_table, seed_table

    rows = list(verified_rows[0].values())
    assert all(r.weights == "random" for r in rows)
    console = Console(record=True, width=250)
    seed_table(rows, console)
    text = console.export_text()
    assert "Fidelity (random weights)" in text and "agreement with random weights" in text
    assert "Fidelity (random weights)" in markdown_table(rows)
    console = Console(record=True, width=250)
    fidelity_table(rows, console)
    text = console.export_text()
    assert "agreement with random weights" in text and "max_rel_err" in text
    assert "INT8 calibrated on: photos: hubble_deep_field" in text
    from infertune.report.data import load_report_data
    from infertune.report.html import render_html

    html = render_html(load_report_data(verified_rows[1].csv_path), [])
    assert "agreement with random weights" in html


def test_verify_command_prints_the_metrics_and_exits_1_on_a_failure(tmp_path, capsys):
    import yaml

    from infertune.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": TINY, "benchmark": {"batch_sizes": [2], "isolation": "none", "device": "cpu"},
        "optimization": {"variants": ["pytorch:fp32", "faulty:fp32:unnormalised"]},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")}}))
    with registered():
        code = main(["verify", "--config", str(config), "--quiet", "--inputs", "synthetic"])
    out = capsys.readouterr().out
    assert code == 1 and "fidelity failed: faulty:fp32:unnormalised" in out
    assert "cos min" in out and "cosine_min" in out and "verified on: synthetic" in out
    with registered():
        assert main(["verify", "--config", str(config), "--quiet", "--variants", "pytorch:fp32"]) == 0


def test_no_calibration_images_left_fails_only_the_int8_cells(tmp_path):
    from PIL import Image

    from infertune.pipeline import run

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    rows = run(_cfg(tmp_path, ["pytorch:fp32", "onnxruntime:int8"], images=str(folder), samples=2),
               log=lambda m: None, measure=False).rows
    assert rows[0].status == "ok" and rows[0].verify_inputs == f"folder {folder}: first 2 of 2 images"
    assert rows[1].status == "failed" and "no images left for INT8 calibration" in rows[1].error


# ---------------------------------------------------------------- degenerate references


@pytest.fixture(scope="module")
def random_init_references():
    """FP32 outputs of random-init torchvision models on four of the shipped photos (224×224)."""
    import torch
    import torchvision

    source, _ = resolve_source((3, 224, 224), verify_count=4)
    x = torch.from_numpy(source.verification(4))
    refs = {}
    for name in ("resnet18", "efficientnet_b0", "mobilenet_v3_large"):
        torch.manual_seed(0)
        with torch.inference_mode():
            refs[name] = getattr(torchvision.models, name)(weights=None).eval()(x).numpy()
    return refs


def _as_fp16(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_large"])
def test_a_collapsed_random_init_reference_makes_the_verdict_unverifiable(random_init_references, name):
    ref = random_init_references[name]
    assert degenerate_reason(ref).endswith(", near zero")  # ~1e-13 and ~1e-9 logits
    fid = compare(_as_fp16(ref), ref, DEFAULT_TOLERANCES["fp16"])  # fp16 rounds such logits to 0
    assert fid.cosine_min < 0.5  # what used to read as a broken conversion
    assert fid.unverifiable.startswith("the FP32 reference is degenerate (every value lies within ±")
    assert "trained weights" in fid.unverifiable and "--weights" in fid.unverifiable
    assert not fid.ok and fid.as_row_fields()["fidelity_ok"] is None
    assert "cosine_min" in fid.failures[0]  # what the metrics showed is kept for the row


def test_a_random_init_resnet_sends_every_input_to_one_class_yet_is_still_judged(random_init_references):
    ref = random_init_references["resnet18"]
    assert len(set(ref.argmax(axis=1))) == 1  # top-1 agreement proves nothing here (MEASUREMENT.md) ...
    assert degenerate_reason(ref) == ""  # ... but its logits still vary, so cosine discriminates
    assert compare(_as_fp16(ref), ref, DEFAULT_TOLERANCES["fp16"]).ok
    shuffled = ref[:, np.random.default_rng(0).permutation(ref.shape[1])]  # the same class for all, wrong logits
    fid = compare(shuffled, ref, DEFAULT_TOLERANCES["int8"])
    assert not fid.ok and fid.unverifiable == "" and "cosine_min" in fid.failed_metrics


def test_the_same_output_for_every_input_is_degenerate_and_zero_is_named():
    rng = np.random.default_rng(5)
    constant = np.tile(rng.standard_normal(10), (4, 1)) + 1e-6 * rng.standard_normal((4, 10))
    assert degenerate_reason(constant).startswith("the same output for every input (it varies by")
    assert "one top-1 class for every input" in degenerate_reason(constant)
    assert degenerate_reason(np.zeros((4, 10))) == "every value is 0"  # a zero-initialised head (vit_b_16)
    assert degenerate_reason(np.array([[1.0, np.nan], [2.0, np.inf]])) == "it holds 1 NaN and 1 inf of 4 values"
    assert degenerate_reason(constant[:1]) == ""  # one sample cannot show input dependence


def test_a_degenerate_head_is_left_out_and_the_others_are_judged():
    rng = np.random.default_rng(6)
    ref = {"logits": rng.standard_normal((4, 10)), "aux": np.zeros((4, 3))}
    fid = compare({"logits": ref["logits"] * -1, "aux": np.ones((4, 3))}, ref, DEFAULT_TOLERANCES["fp32"])
    assert fid.unverifiable == "" and not fid.ok and fid.failed_metrics == ("cosine_min", "max_rel_err")
    assert fid.notes == ("not judged, degenerate reference output(s): aux: every value is 0",)


def test_a_near_zero_model_is_unverifiable_through_the_pipeline(tmp_path):
    from infertune.pipeline import run
    from infertune.results import STATUSES

    model = {**TINY, "name": "tests.fixture_models:near_zero_logits"}
    rows = run(_cfg(tmp_path, ["pytorch:fp32", "onnxruntime:int8"], model=model), log=lambda m: None,
               measure=False).rows
    assert "unverifiable" in STATUSES
    for row in rows:
        assert row.status == "unverifiable" and row.fidelity_ok is None, (row.variant, row.error)
        assert row.error.startswith("the FP32 reference is degenerate (every value lies within ±")
        assert "--weights" in row.error
    assert rows[0].cosine_min > 0.9999  # the metrics are still recorded


# ---------------------------------------------------------------- notes, charts


def test_notes_are_appended_never_overwritten(tmp_path):
    from infertune.results import ResultFiles, ResultRow
    from infertune.sink import annotate_int8

    rows = [ResultRow("m", "onnxruntime:fp32", "onnxruntime", "fp32", "", 1, "cpu", latency_p50_ms=10.0),
            ResultRow("m", "onnxruntime:int8", "onnxruntime", "int8", "", 1, "cpu", latency_p50_ms=12.0,
                      note="ONNX export: the batch dimension cannot stay dynamic (...)")]
    files = ResultFiles(tmp_path / "r.csv", tmp_path / "r.json", rows=rows)
    annotate_int8(files)
    assert rows[1].note.startswith("ONNX export: the batch dimension cannot stay dynamic (...); INT8 not faster than")
    annotate_int8(files)  # again (a resumed run): the same note is not repeated
    assert rows[1].note.count("INT8 not faster") == 1


def test_the_accuracy_mode_pareto_chart_plots_top1_accuracy():
    from infertune.report.charts import _Context, _fidelity_metric, _pareto
    from infertune.results import ResultRow

    rows = []
    for variant, p50, acc in (("pytorch:fp32", 40.0, 0.76), ("onnxruntime:fp32", 20.0, 0.76),
                              ("onnxruntime:int8", 10.0, 0.70)):
        backend, precision = variant.split(":")
        rows.append(ResultRow("m", variant, backend, precision, "", 1, "cpu", latency_p50_ms=p50,
                              throughput_ips=1000 / p50, top1_agreement=1.0, cosine_min=0.99, top1_acc=acc,
                              ref_top1_acc=0.76, fidelity_ok=True))
    ctx = _Context("m", "cpu", rows, {})
    assert _fidelity_metric(ctx)[0] == "top1_acc"
    figure = _pareto(ctx)
    assert figure.axes[0].get_ylabel().startswith("top-1 accuracy (%)")
    ys = sorted(float(y) for ax in figure.axes for c in ax.collections for _, y in c.get_offsets())
    assert ys[0] == pytest.approx(70.0) and ys[-1] == pytest.approx(76.0)


def test_an_unverifiable_row_keeps_its_timing_in_reports_but_never_wins():
    from infertune.report.view import (
        best_variants,
        fidelity_text,
        is_measured,
        reason_text,
        status_word,
    )
    from infertune.results import ResultRow

    row = ResultRow("m", "onnxruntime:int8", "onnxruntime", "int8", "", 1, "cpu", status="unverifiable",
                    error="the FP32 reference is degenerate (every value is 0), so ...", latency_p50_ms=5.0,
                    cosine_min=0.0)
    assert is_measured(row) and best_variants([row]) == {}
    assert fidelity_text(row) == "unverifiable: degenerate reference"
    assert status_word(row) == "unverifiable"
    assert reason_text(row).startswith("unverifiable: the FP32 reference is degenerate")
