"""Deliberately broken variants, for tests only: the fidelity gate must catch each and name the metric.

``faulty:fp32:perturb=<relative noise>``  the model's weights perturbed (a conversion that corrupted them)
``faulty:fp32:unnormalised``              the runner feeds pixels in [0, 1], skipping the mean/std step
                                          (a deployment that forgot the preprocessing)
``faulty:int8:calibration=zeros|huge``    onnxruntime INT8 calibrated on all-zero or 1000x-scaled inputs

``registered()`` adds the ``faulty`` backend to the registry for the duration of a test and removes it
after, so it never leaks into the real ladder. Tests run it in-process (``isolation: none``): a spawned
worker would not import this module.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator

import numpy as np

from infertune.backends.base import Backend, PrepareContext, Runner
from infertune.backends.registry import _REGISTRY, get_backend, register_backend
from infertune.backends.torch_common import TorchRunner
from infertune.errors import ConfigError
from infertune.inputs import IMAGENET_MEAN, IMAGENET_STD

CALIBRATION_FAULTS = {
    "zeros": lambda x: np.zeros_like(x),
    "huge": lambda x: x * 1000.0,
}


class FaultyBackend(Backend):
    name = "faulty"
    label = "Faulty (test only)"
    description = "test-only broken variants"
    precisions = frozenset({"fp32", "int8"})

    def availability(self, device: str, precision: str):  # type: ignore[override]
        from infertune.backends.base import Availability

        return Availability.yes()

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        allowed = {"perturb", "unnormalised", "calibration"}
        if set(options) - allowed:
            raise ConfigError(f"faulty: unknown option(s) {sorted(set(options) - allowed)}")

    def prepare(self, ctx: PrepareContext) -> Runner:
        import torch

        opts = ctx.options
        if "calibration" in opts:
            corrupt = CALIBRATION_FAULTS[opts["calibration"]]
            settings = copy.deepcopy(ctx.settings)
            int8 = settings.setdefault("int8", {})
            int8["calibration_id"] = f"corrupted-{opts['calibration']}-{int8.get('calibration_id')}"
            broken = dataclasses.replace(ctx, options={}, settings=settings,
                                         calibration=lambda n: corrupt(ctx.calibration(n)))
            return get_backend("onnxruntime").prepare(broken)
        model = copy.deepcopy(ctx.model).eval()
        if "perturb" in opts:
            scale = float(opts["perturb"] or 0.01)
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * scale * p.abs().mean())
        if "unnormalised" in opts:
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            inner = model

            def model(x, inner=inner):  # undo the normalisation: the model sees raw [0, 1] pixels
                return inner(x * std + mean)
        return TorchRunner(model, "cpu", torch.float32)


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The ``faulty`` backend, registered for the duration of the block."""
    register_backend(FaultyBackend)
    try:
        yield
    finally:
        _REGISTRY.pop("faulty", None)
