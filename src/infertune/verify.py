"""Fidelity: compare a variant's outputs with the FP32 eager reference on the same inputs.

Metrics per output tensor (a model may return a tuple or dict of tensors; each is compared, and the
row carries the worst value of each metric): max and mean absolute error, max error relative to the
reference's value range, the lowest per-sample cosine similarity, SQNR (dB), and for (N, classes)
outputs top-1 agreement and top-5 overlap. Thresholds are per precision (``DEFAULT_TOLERANCES``,
documented with their reasoning in docs/fidelity.md) and any of them can be overridden in the config
(``verify.tolerances.int8.cosine_min: 0.99``). A failure names the metric that broke its bound.

With random weights every input tends to land in the same class, so top-1 agreement is trivially
high; cosine, SQNR and relative error still discriminate, which is why they are thresholds too.
Some random-init references are worse than that (``degenerate_reason``): logits near zero
(random EfficientNet ~1e-13, MobileNetV3 ~1e-9, ViT's zero-initialised head exactly 0) or the same
output for every input. Nothing can be judged against those, so the verdict is ``unverifiable``
with the reason and the fix (trained weights), not a failure. NaN/inf are counted per output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Bounds a variant must keep; ``None`` = not checked. Field names are the config keys."""

    #: lowest per-sample cosine similarity allowed.
    cosine_min: float | None = None
    #: largest max-abs error allowed, as a fraction of the reference's value range.
    max_rel_err: float | None = None
    #: largest absolute error allowed (in output units, e.g. logits).
    max_abs_err: float | None = None
    #: lowest signal-to-quantization-noise ratio allowed, in dB.
    sqnr_min_db: float | None = None
    #: lowest fraction of samples whose top-1 class matches the reference's.
    top1_min: float | None = None
    #: lowest mean overlap of the top-5 class sets (|A ∩ B| / 5).
    top5_min: float | None = None
    #: accuracy mode: the variant's top-1 accuracy must be at least this fraction of the reference's.
    accuracy_ratio_min: float | None = None


#: defaults per precision; docs/fidelity.md explains each number.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(cosine_min=0.9999, max_rel_err=1e-4, accuracy_ratio_min=0.99),
    "tf32": Tolerance(cosine_min=0.9995, max_rel_err=1e-2, accuracy_ratio_min=0.99),
    "fp16": Tolerance(cosine_min=0.999, max_rel_err=2e-2, accuracy_ratio_min=0.99),
    "bf16": Tolerance(cosine_min=0.99, max_rel_err=5e-2, accuracy_ratio_min=0.99),
    "int8": Tolerance(cosine_min=0.98, top1_min=0.8, accuracy_ratio_min=0.99),
}

#: tolerance field -> (metric it bounds, True when the metric must be >= the bound).
BOUNDS: dict[str, tuple[str, bool]] = {
    "cosine_min": ("cosine_min", True),
    "max_rel_err": ("max_rel_err", False),
    "max_abs_err": ("max_abs_err", False),
    "sqnr_min_db": ("sqnr_db", True),
    "top1_min": ("top1_agreement", True),
    "top5_min": ("top5_overlap", True),
}
_PERCENT = {"top1_agreement", "top5_overlap"}

#: a reference output whose largest magnitude is at most this is "near zero": below fp16's
#: subnormal range (6e-8..6e-5) and any INT8 scale, so reduced-precision results round to 0.
DEGENERATE_ABS_MAX = 1e-6
#: a reference output whose variation across inputs (largest |value - mean over samples|) is at most
#: this fraction of its magnitude is "the same for every input": under two fp16 rounding steps
#: (2^-11 each), so reduced precision cannot reproduce it and a variant ignoring its input would agree.
DEGENERATE_REL_VARIATION = 1e-3
#: what the user can do about a degenerate reference.
DEGENERATE_FIX = ("this is what random (untrained) weights give for models such as efficientnet_b0, "
                  "mobilenet_v3 and vit_b_16; use trained weights (model.pretrained: true, or "
                  "--weights PATH with a state_dict)")


@dataclass(frozen=True)
class OutputMetrics:
    """How close one output tensor is to its reference. ``top*`` are None for non-(N, C) outputs."""

    name: str
    max_abs_err: float
    mean_abs_err: float
    max_rel_err: float
    cosine_min: float
    sqnr_db: float
    top1_agreement: float | None
    top5_overlap: float | None


@dataclass(frozen=True)
class Fidelity:
    """How close one variant's outputs are to the reference, and whether that is within tolerance.

    The scalar metrics are the worst over the judged output tensors; ``outputs`` holds each one.
    ``failed_metrics`` names the metrics (row field names) that broke their bound (``outputs`` when an
    output is missing, has the wrong shape or holds NaN/inf); ``notes`` say what was not judged.
    ``unverifiable`` is non-empty (the reason and the fix) when every reference output is degenerate:
    the verdict is then neither pass nor fail, and ``failures`` say what the metrics showed anyway.
    """

    max_abs_err: float
    max_rel_err: float
    cosine_min: float
    sqnr_db: float
    top1_agreement: float | None
    samples: int
    ok: bool
    failures: tuple[str, ...] = ()
    mean_abs_err: float | None = None
    top5_overlap: float | None = None
    outputs: tuple[OutputMetrics, ...] = ()
    failed_metrics: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    unverifiable: str = ""

    def as_row_fields(self) -> dict[str, Any]:
        fields_: dict[str, Any] = {
            "fidelity_ok": None if self.unverifiable else self.ok,
            "max_abs_err": self.max_abs_err,
            "mean_abs_err": self.mean_abs_err,
            "max_rel_err": self.max_rel_err,
            "cosine_min": self.cosine_min,
            "sqnr_db": self.sqnr_db,
            "top1_agreement": self.top1_agreement,
            "top5_overlap": self.top5_overlap,
            "verify_samples": self.samples,
        }
        if len(self.outputs) > 1:
            fields_["fidelity_outputs"] = json.dumps([_jsonable(asdict(o)) for o in self.outputs])
        return fields_


def output_list(outputs: Any) -> list[tuple[str, np.ndarray]]:
    """A model's output(s) as named float arrays: a tensor -> ``[("output", a)]``; a tuple/list ->
    ``output0, output1...``; a dict -> its keys. Torch tensors are detached and moved to the host."""
    if isinstance(outputs, Mapping):
        return [(str(k), _to_array(v)) for k, v in outputs.items()]
    if isinstance(outputs, Sequence) and not isinstance(outputs, (str, bytes)) and not hasattr(outputs, "shape"):
        if len(outputs) == 1:
            return [("output", _to_array(outputs[0]))]
        return [(f"output{i}", _to_array(v)) for i, v in enumerate(outputs)]
    return [("output", _to_array(outputs))]


def _to_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (bf16 has no numpy dtype: go through float32)
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def compare(outputs: Any, reference: Any, tolerance: Tolerance) -> Fidelity:
    """Compare outputs with the reference, output tensor by output tensor.

    Both are an (N, ...) array or a tuple/list/dict of them (see ``output_list``). Outputs are paired
    by name when the variant's names are the reference's, else by order; a variant returning another
    number of outputs fails. A variant's NaN/inf fail its output, counted. Reference outputs that are
    degenerate (``degenerate_reason``) are not judged; when none is left, ``unverifiable`` says why.
    """
    outs, refs = output_list(outputs), output_list(reference)
    n = len(refs[0][1])
    failures: list[str] = []
    failed: list[str] = []
    notes: list[str] = []
    pairs, problem = _pair(outs, refs)
    if problem:
        failures.append(problem)
        failed.append("outputs")
    per_output: list[OutputMetrics] = []
    judged: list[OutputMetrics] = []
    degenerate: list[str] = []
    for name, out, ref in pairs:
        metrics, problem = _metrics(name, out, ref)
        per_output.append(metrics)
        reason = degenerate_reason(ref)
        if reason:
            degenerate.append(f"{name}: {reason}" if len(refs) > 1 else reason)
            if problem:  # the variant's own NaN/inf are worth naming even so
                failures.append(f"{name}: {problem}" if len(refs) > 1 else problem)
            continue
        judged.append(metrics)
        if problem:
            failures.append(f"{name}: {problem}" if len(refs) > 1 else problem)
            failed.append("outputs")
    unverifiable = ""
    if degenerate and not judged:
        unverifiable = (f"the FP32 reference is degenerate ({'; '.join(degenerate)}), so no variant can be "
                        f"judged against it: {DEGENERATE_FIX}")
    elif degenerate:
        notes.append(f"not judged, degenerate reference output(s): {'; '.join(degenerate)}")
    worst = _worst(judged or per_output)
    for bound_name, (metric, at_least) in BOUNDS.items():
        bound, value = getattr(tolerance, bound_name), worst[metric]
        if bound is None or value is None or "outputs" in failed:
            continue
        if value < bound if at_least else value > bound:
            failed.append(metric)
            failures.append(f"{metric} {_fmt(metric, value)} {'<' if at_least else '>'} {_fmt(metric, bound)}")
    return Fidelity(
        max_abs_err=worst["max_abs_err"], max_rel_err=worst["max_rel_err"], cosine_min=worst["cosine_min"],
        sqnr_db=worst["sqnr_db"], top1_agreement=worst["top1_agreement"], samples=n,
        ok=not failures and not unverifiable, failures=tuple(failures), mean_abs_err=worst["mean_abs_err"],
        top5_overlap=worst["top5_overlap"], outputs=tuple(per_output), failed_metrics=tuple(dict.fromkeys(failed)),
        notes=tuple(notes), unverifiable=unverifiable,
    )


def _pair(outs: list[tuple[str, np.ndarray]], refs: list[tuple[str, np.ndarray]]
          ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], str]:
    """(reference name, output, reference) pairs, by name where the names match, else by order; and a
    problem when the counts differ (the outputs that do pair are still compared)."""
    out_names, ref_names = [name for name, _ in outs], [name for name, _ in refs]
    problem = ""
    if len(outs) != len(refs):
        problem = (f"the variant returns {len(outs)} output(s) ({', '.join(out_names)}), the reference "
                   f"{len(refs)} ({', '.join(ref_names)})")
    if set(out_names) <= set(ref_names) and len(set(out_names)) == len(out_names):
        by_name = dict(outs)
        return [(name, by_name[name], ref) for name, ref in refs if name in by_name], problem
    return [(name, out, ref) for (_, out), (name, ref) in zip(outs, refs)], problem


def degenerate_reason(reference: np.ndarray) -> str:
    """'' when a reference output can discriminate a right variant from a wrong one, else why not.

    Degenerate (documented in docs/fidelity.md): it holds NaN/inf; every value is near zero
    (``DEGENERATE_ABS_MAX``); or, with two samples or more, it is the same for every input within
    ``DEGENERATE_REL_VARIATION`` of its magnitude. One top-1 class for every input is NOT degenerate
    by itself: a random-init ResNet does that while its logits still vary and cosine still discriminates.
    """
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return ""
    bad = _non_finite(ref)
    if bad:
        return f"it holds {bad}"
    scale = float(np.abs(ref).max())
    if scale <= DEGENERATE_ABS_MAX:
        return "every value is 0" if scale == 0 else f"every value lies within ±{scale:.1e}, near zero"
    if len(ref) >= 2:
        variation = float(np.abs(ref - ref.mean(axis=0)).max())
        if variation <= DEGENERATE_REL_VARIATION * scale:
            classes = ""
            if ref.ndim == 2 and ref.shape[1] > 1 and len(np.unique(ref.argmax(axis=1))) == 1:
                classes = ", one top-1 class for every input"
            return (f"the same output for every input (it varies by {variation:.1e} on values up to "
                    f"{scale:.1e}{classes})")
    return ""


def _non_finite(values: np.ndarray) -> str:
    """'3 NaN and 12 inf of 8000 values', or '' when every value is finite."""
    nan = int(np.isnan(values).sum())
    inf = int(np.isinf(values).sum())
    if not nan and not inf:
        return ""
    counts = " and ".join(f"{count} {what}" for count, what in ((nan, "NaN"), (inf, "inf")) if count)
    return f"{counts} of {values.size} values"


def _metrics(name: str, outputs: np.ndarray, reference: np.ndarray) -> tuple[OutputMetrics, str]:
    """All metrics of one output tensor, and a problem that fails it whatever the tolerance."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if out.shape != ref.shape:
        return _broken(name), f"output shape {tuple(np.shape(outputs))} differs from the reference's {tuple(np.shape(reference))}"
    bad = _non_finite(out)
    if bad:
        in_ref = "" if np.all(np.isfinite(ref)) else "; the reference has some too"
        return _broken(name), f"outputs hold {bad} (overflow or invalid arithmetic{in_ref})"
    if not np.all(np.isfinite(ref)):
        return _broken(name), f"the reference holds {_non_finite(ref)}"
    diff = out - ref
    max_abs = float(np.abs(diff).max()) if diff.size else 0.0
    spread = float(ref.max() - ref.min()) if ref.size else 0.0
    norm_out, norm_ref = np.linalg.norm(out, axis=1), np.linalg.norm(ref, axis=1)
    norms = norm_out * norm_ref
    # two all-zero samples agree (1); one all-zero sample against a non-zero one does not (0)
    cos = np.where(norms > 0, (out * ref).sum(axis=1) / np.where(norms > 0, norms, 1.0),
                   np.where((norm_out == 0) & (norm_ref == 0), 1.0, 0.0))
    noise = float((diff**2).sum())
    signal = float((ref**2).sum())
    classes = np.ndim(reference) == 2 and np.shape(reference)[1] > 1
    return OutputMetrics(
        name=name,
        max_abs_err=max_abs,
        mean_abs_err=float(np.abs(diff).mean()) if diff.size else 0.0,
        max_rel_err=max_abs / (spread or 1.0),
        cosine_min=float(cos.min()) if cos.size else 1.0,
        sqnr_db=(float(10 * np.log10(signal / noise)) if signal > 0 else -np.inf) if noise > 0 else np.inf,
        top1_agreement=float((out.argmax(axis=1) == ref.argmax(axis=1)).mean()) if classes else None,
        top5_overlap=topk_overlap(out, ref, 5) if classes else None,
    ), ""


def topk_overlap(out: np.ndarray, ref: np.ndarray, k: int) -> float:
    """Mean over samples of |top-k(out) ∩ top-k(ref)| / k (k capped at the number of classes)."""
    k = min(k, out.shape[1])
    top_out = np.argpartition(-out, k - 1, axis=1)[:, :k]
    top_ref = np.argpartition(-ref, k - 1, axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_out, top_ref)]))


def _broken(name: str) -> OutputMetrics:
    return OutputMetrics(name, np.inf, np.inf, np.inf, -1.0, -np.inf, 0.0, 0.0)


def _worst(per_output: list[OutputMetrics]) -> dict[str, Any]:
    """The worst value of each metric over the outputs (None where no output has it)."""
    worst: dict[str, Any] = {}
    for f in fields(OutputMetrics):
        if f.name == "name":
            continue
        values = [getattr(m, f.name) for m in per_output if getattr(m, f.name) is not None]
        higher_is_better = f.name in ("cosine_min", "sqnr_db", "top1_agreement", "top5_overlap")
        worst[f.name] = (min(values) if higher_is_better else max(values)) if values else None
    return worst


def _fmt(metric: str, value: float) -> str:
    if metric in _PERCENT:
        return f"{value:.1%}"
    if metric == "cosine_min":
        return f"{value:.6f}"
    if metric == "sqnr_db":
        return f"{value:.1f} dB"
    return f"{value:.3g}"


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}

