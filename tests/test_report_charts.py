"""Charts: every PNG exists, decodes, has the planned size and is not blank, across the awkward cases
(failed and unavailable rows, one batch size, many variants, missing samples, no baseline, no fidelity)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infertune.report.charts import (
    CAPTIONS,
    DPI,
    WIDTH_PX,
    _fidelity_metric,
    _frontier,
    write_charts,
)
from infertune.results import ResultRow
from tests.report_fixtures import LADDER, make_rows

ALL_KINDS = {"latency", "throughput", "speedup", "distribution", "pareto"}


def _check_png(path: Path) -> tuple[int, int]:
    """Decodes fully, is WIDTH_PX wide, has a sane height, and is not a blank canvas."""
    with Image.open(path) as im:
        im.load()
        width, height = im.size
        pixels = np.asarray(im.convert("RGB"), dtype=float)
    assert width == WIDTH_PX, (path, width)
    assert 300 <= height <= 3000, (path, height)
    assert (pixels < 200).mean() > 0.01 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, path
    return width, height


def _kinds(paths: list[Path], prefix: str = "resnet50_cpu_") -> set[str]:
    return {p.stem.removeprefix(prefix) for p in paths}


def test_every_chart_of_a_full_ladder(tmp_path):
    rows, samples = make_rows()
    paths = write_charts(rows, samples, tmp_path)
    assert _kinds(paths) == ALL_KINDS == set(CAPTIONS)
    for path in paths:
        _check_png(path)


def test_chart_height_is_planned_and_grows_with_the_ladder(tmp_path):
    ladder = [(f"ort{i}:fp32", "onnxruntime", "fp32", 10.0 + i, 0.9999, "ok", "", False) for i in range(18)]
    few = write_charts(*make_rows(), tmp_path / "few")
    many = write_charts(*make_rows(ladder=LADDER + ladder), tmp_path / "many")
    assert _kinds(many) == ALL_KINDS  # 24 variants: the tab20 palette cycles, nothing breaks
    for a, b in zip(sorted(few), sorted(many)):
        (_, h_few), (_, h_many) = _check_png(a), _check_png(b)
        if a.stem.endswith(("latency", "speedup", "distribution")):  # one row per variant
            assert h_many > h_few
            # 0.3 in per variant + 1.1 in per panel row + 0.6 in of titles, at DPI: never cropped to content
            assert h_many == round((0.3 * 24 + 1.1 + 0.6) * DPI)


def test_one_batch_size(tmp_path):
    paths = write_charts(*make_rows(batches=(4,)), tmp_path)
    assert _kinds(paths) == ALL_KINDS  # throughput becomes bars per variant instead of a one-point line
    for path in paths:
        _check_png(path)


def test_csv_only_has_no_distribution_and_partial_samples_still_draw(tmp_path):
    rows, samples = make_rows()
    assert _kinds(write_charts(rows, None, tmp_path / "none")) == ALL_KINDS - {"distribution"}
    some = {k: v for k, v in samples.items() if "onnxruntime" in k}
    partial = write_charts(rows, some, tmp_path / "some")
    assert "distribution" in _kinds(partial)
    _check_png(next(p for p in partial if p.stem.endswith("distribution")))


def test_no_baseline_no_speedup_chart_and_pareto_uses_throughput(tmp_path):
    rows, samples = make_rows()
    rows = [r for r in rows if r.variant != "pytorch:fp32"]
    for r in rows:
        r.speedup_vs_pytorch = None
    assert _kinds(write_charts(rows, samples, tmp_path)) == ALL_KINDS - {"speedup"}


def test_no_fidelity_numbers_no_pareto(tmp_path):
    rows, samples = make_rows()
    for r in rows:
        r.cosine_min = r.sqnr_db = r.top1_agreement = None
    assert _kinds(write_charts(rows, samples, tmp_path)) == ALL_KINDS - {"pareto"}


def test_nothing_measured_no_charts_and_null_backend_left_out(tmp_path):
    rows, _ = make_rows()
    failed = [r for r in rows if r.status in ("unavailable", "failed")]
    null = ResultRow(model="resnet50", variant="null:fp32", backend="null", precision="fp32", options="",
                     batch_size=1, device="cpu", latency_p50_ms=0.0002, throughput_ips=5e6)
    assert write_charts(failed, {}, tmp_path) == []
    assert write_charts([*failed, null], {}, tmp_path) == []  # the harness alone is not a chart of the model


def test_one_chart_set_per_model_and_device(tmp_path):
    cpu, s1 = make_rows()
    gpu, s2 = make_rows(device="cuda", model="my model/v2")
    paths = write_charts(cpu + gpu, {**s1, **s2}, tmp_path)
    assert _kinds(paths, "my-model-v2_cuda_") >= {"latency"} and len(paths) == 2 * len(ALL_KINDS)


@pytest.mark.parametrize(("agreements", "expected"), [
    ((1.0, 1.0, 1.0), "sqnr_db"),  # every variant agrees 100%: SQNR tells them apart
    ((1.0, 0.75, 1.0), "top1_agreement"),
])
def test_fidelity_axis_is_the_first_measure_that_separates_variants(agreements, expected):
    from infertune.report.charts import _Context

    rows, _ = make_rows(batches=(1,))
    measured = [r for r in rows if r.latency_p50_ms is not None][:3]
    for row, agree, sqnr in zip(measured, agreements, (60.0, 45.0, 30.0)):
        row.top1_agreement, row.sqnr_db = agree, sqnr
    name, _, _, why = _fidelity_metric(_Context("resnet50", "cpu", measured, {}))
    assert name == expected
    assert ("is 100% for every variant" in why) == (expected == "sqnr_db")


def test_frontier_keeps_only_points_nothing_beats_on_both():
    points = [(1.0, 120.0, "fp32"), (1.4, 118.0, "ts"), (1.2, 60.0, "dominated"), (5.0, 40.0, "int8"),
              (4.0, 35.0, "dominated too")]
    assert [p[2] for p in _frontier(points)] == ["fp32", "ts", "int8"]


# ---------------------------------------------------------------- readable tick labels


def _ladder_between(lo_ms: float, hi_ms: float, count: int = 8) -> list[tuple]:
    """A ladder whose batch-1 medians run geometrically from ``hi_ms`` down to ``lo_ms``; the last fails fidelity."""
    p50s = np.geomspace(hi_ms, lo_ms, count)
    names = ["pytorch:fp32", "torchscript:fp32", "torch_compile:fp32", "aoti:fp32", "onnxruntime:fp32",
             "openvino:fp32", "openvino:int8", "onnxruntime:int8"][:count]
    return [(v, v.split(":")[0], v.split(":")[1], float(p), 0.99999 - 0.002 * i,
             "fidelity_failed" if v == "onnxruntime:int8" else "ok", "", False)
            for i, (v, p) in enumerate(zip(names, p50s))]


def _tick_labels(fig, axis) -> list:
    renderer = fig.canvas.get_renderer()
    lo, hi = sorted(axis.get_view_interval())
    labels = [t for t, loc in zip(axis.get_ticklabels(), axis.get_ticklocs())
              if t.get_visible() and t.get_text() and lo <= loc <= hi]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in labels]


@pytest.mark.parametrize(("lo_ms", "hi_ms"), [(0.1, 0.5), (0.1, 10_000), (1.0, 3.0), (50, 2000), (5000, 10_000)])
def test_tick_labels_never_run_together_at_any_data_range(lo_ms, hi_ms):
    """Latencies from 0.1 ms to 10 s, linear and log axes: on every axis of every chart each tick label is
    drawn whole, apart from its neighbours, and a numeric axis has at least two of them."""
    from infertune.report.charts import draw_charts

    rows, samples = make_rows(batches=(1, 8, 64), ladder=_ladder_between(lo_ms, hi_ms))
    figures = draw_charts(rows, samples)
    assert {stem.removeprefix("resnet50_cpu_") for stem, _ in figures} == ALL_KINDS
    for stem, fig in figures:
        fig.canvas.draw()
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            for axis in (ax.xaxis, ax.yaxis):
                labels = _tick_labels(fig, axis)
                horizontal = axis is ax.xaxis
                boxes = sorted((b for _, b in labels), key=lambda b: b.x0 if horizontal else b.y0)
                for a, b in itertools.pairwise(boxes):
                    gap = b.x0 - a.x1 if horizontal else b.y0 - a.y1
                    assert gap >= 2, (stem, [t for t, _ in labels])
                texts = [t for t, _ in labels]
                numeric = [t for t in texts if re.fullmatch(r"[−-]?[\d,]*\.?\d+", t)]
                value_axis = horizontal and not stem.endswith("throughput") or not horizontal and \
                    stem.endswith(("throughput", "pareto")) and ax is fig.axes[0]
                if value_axis:
                    assert len(numeric) >= 2, (stem, texts)


def test_every_point_of_the_pareto_chart_is_named_and_labels_do_not_overlap():
    """fp32 variants pile up at 100% agreement: each still gets its name, stacked with its neighbours'."""
    from matplotlib.text import Text

    from infertune.report.charts import draw_charts
    from tests.report_fixtures import DEFAULT_CPU_LADDER

    rows, samples = make_rows(batches=(1, 8, 64), ladder=DEFAULT_CPU_LADDER)
    fig = dict(draw_charts(rows, samples))["resnet50_cpu_pareto"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    plotted = {r.variant for r in rows if r.latency_p50_ms and r.backend != "null" and r.cosine_min is not None}
    for ax in fig.axes:
        names = [name for t in ax.texts for name in t.get_text().splitlines()]
        assert sorted(names) == sorted(plotted)
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text, not its leader line
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b)
