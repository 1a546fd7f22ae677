"""Fidelity: compare a variant's outputs with the FP32 eager reference on the same inputs.

Metrics per cell: max absolute error, max error relative to the reference logits' range, the
lowest per-sample cosine similarity, SQNR (dB) and top-1 agreement. Tolerances are per precision
(FP32 paths must agree almost exactly; INT8 is judged by cosine and top-1, not allclose).

With random weights every input tends to land in the same class, so top-1 agreement is trivially
100%; cosine, SQNR and relative error still discriminate, which is why they are thresholds too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """A variant passes when every bound that is set holds."""

    cosine_min: float | None = None
    max_rel_err: float | None = None
    top1_min: float | None = None


#: defaults per precision (OpenVINO's accuracy checker uses cosine >= 0.999 / 0.995 / 0.99 for fp32/fp16/bf16).
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(cosine_min=0.9999, max_rel_err=1e-4),
    # TF32 keeps fp32's range with fp16's 10-bit mantissa in the products: judged like fp16.
    "tf32": Tolerance(cosine_min=0.999, max_rel_err=2e-2),
    "fp16": Tolerance(cosine_min=0.999, max_rel_err=2e-2),
    "bf16": Tolerance(cosine_min=0.99, max_rel_err=5e-2),
    "int8": Tolerance(cosine_min=0.98, top1_min=0.9),
}


@dataclass(frozen=True)
class Fidelity:
    """How close one variant's outputs are to the reference, and whether that is within tolerance."""

    max_abs_err: float
    max_rel_err: float
    cosine_min: float
    sqnr_db: float
    top1_agreement: float
    samples: int
    ok: bool
    failures: tuple[str, ...] = ()

    def as_row_fields(self) -> dict[str, float | int | bool]:
        return {
            "fidelity_ok": self.ok,
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "cosine_min": self.cosine_min,
            "sqnr_db": self.sqnr_db,
            "top1_agreement": self.top1_agreement,
            "verify_samples": self.samples,
        }


def compare(outputs: np.ndarray, reference: np.ndarray, tolerance: Tolerance) -> Fidelity:
    """Compare (N, ...) outputs with the (N, ...) reference; non-finite outputs always fail."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if out.shape != ref.shape:
        return Fidelity(np.inf, np.inf, -1.0, -np.inf, 0.0, len(ref), False,
                        (f"output shape {out.shape} differs from the reference's {ref.shape}",))
    if not np.all(np.isfinite(out)):
        return Fidelity(np.inf, np.inf, -1.0, -np.inf, 0.0, len(ref), False, ("outputs contain NaN or inf",))
    diff = out - ref
    max_abs = float(np.abs(diff).max())
    spread = float(ref.max() - ref.min()) or 1.0
    max_rel = max_abs / spread
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    cos = np.where(norms > 0, (out * ref).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
    cosine_min = float(cos.min())
    noise = float((diff**2).sum())
    sqnr = float(10 * np.log10((ref**2).sum() / noise)) if noise > 0 else float("inf")
    top1 = float((out.argmax(axis=1) == ref.argmax(axis=1)).mean())
    failures: list[str] = []
    if tolerance.cosine_min is not None and cosine_min < tolerance.cosine_min:
        failures.append(f"cosine {cosine_min:.6f} < {tolerance.cosine_min}")
    if tolerance.max_rel_err is not None and max_rel > tolerance.max_rel_err:
        failures.append(f"max error {max_rel:.2e} of the logit range > {tolerance.max_rel_err:.0e}")
    if tolerance.top1_min is not None and top1 < tolerance.top1_min:
        failures.append(f"top-1 agreement {top1:.1%} < {tolerance.top1_min:.0%}")
    return Fidelity(max_abs, max_rel, cosine_min, sqnr, top1, len(ref), not failures, tuple(failures))
