"""TorchScript: ``torch.jit.trace`` + ``freeze`` (+ ``optimize_for_inference`` on CPU), cached as a ``.pt`` file.

Freezing inlines the weights as constants so the JIT can fold batch norm into convolutions and drop
attribute lookups; on CPU ``optimize_for_inference`` then rewrites convolutions to oneDNN (MKLDNN)
kernels; together they make it faster than eager on the CPU (docs/results/cpu.md, "TorchScript").

What is cached is the frozen module; ``optimize_for_inference`` is re-applied after every load because
its oneDNN-rewritten graph cannot be saved (torch 2.14: ``torch.jit.save`` fails with "required keyword
attribute 'value' is undefined" on its MKLDNN constants) and it takes a fraction of a second. On
CUDA the half model is traced and frozen; ``optimize_for_inference`` is CPU-oriented and skipped there.
Options: ``channels_last`` and ``cuda_graph`` (CUDA: replay the frozen module as one CUDA graph).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infertune.backends.base import Backend, PrepareContext, Runner
from infertune.backends.registry import register_backend
from infertune.backends.torch_common import (
    TorchRunner,
    model_copy,
    parse_eager_options,
    to_tensors,
    torch_dtype,
)

ARTIFACT = "model.pt"


@register_backend
class TorchScriptBackend(Backend):
    name = "torchscript"
    label = "TorchScript"
    description = "torch.jit.trace + freeze (+ optimize_for_inference on CPU); cached .pt file."
    requires = ("torch",)
    seed_switch = "enable_torchscript"
    install_hint = "pip install torch==2.14.1"
    devices = frozenset({"cpu", "cuda"})
    precisions = frozenset({"fp32", "fp16"})
    # CPU half-precision convolutions in torch are reference loops, many times slower than fp32.
    unsupported = {("cpu", "fp16"): "runs only on CUDA (CPU fp16 convolutions are not optimised)"}

    def default_variants(self, device: str) -> list[str]:
        # on CUDA the frozen fp16 module is the rung (fp32 TorchScript there measured no faster than eager)
        return ["torchscript:fp16"] if device == "cuda" else ["torchscript:fp32"]

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        parse_eager_options(self.name, options, device)

    def prepare(self, ctx: PrepareContext) -> Runner:
        self.check(ctx.device, ctx.precision)
        channels_last, cuda_graph = parse_eager_options(self.name, ctx.options, ctx.device)
        import torch

        entry = ctx.cache.entry(
            self.name,
            torch=torch.__version__,
            precision=ctx.precision,
            device=ctx.device,
            input_shape=ctx.input_shape,
            **({"inputs": ctx.input_signature} if isinstance(ctx.example_input, dict) else {}),
            channels_last=channels_last,
        )
        path = entry.file(ARTIFACT)
        if entry.hit:
            ctx.log(f"reusing cached TorchScript module {path}")
            module = _load(path, ctx.device)
        else:
            start = time.perf_counter()
            module = _trace_and_freeze(ctx, channels_last)
            with _quiet():
                torch.jit.save(module, str(path))
            entry.commit({"trace_freeze_s": round(time.perf_counter() - start, 3)})
        if ctx.device == "cpu":
            module = _optimize_for_cpu(module)
        runner = TorchRunner(module, ctx.device, torch_dtype(ctx.precision), channels_last)
        if cuda_graph:
            runner.capture_cuda_graph(runner.to_native(ctx.example_input))
        runner.artifact_path = path
        runner.cache_hit = entry.hit
        return runner


def _trace_and_freeze(ctx: PrepareContext, channels_last: bool) -> Any:
    """Trace a copy of the model in the cell's precision on the cell's device, then freeze it."""
    import torch

    model = model_copy(ctx.model, ctx.device, ctx.precision, channels_last)
    example = to_tensors(ctx.example_input, ctx.device, torch_dtype(ctx.precision), channels_last)
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        return torch.jit.freeze(traced.eval())


def _load(path: Path, device: str) -> Any:
    import torch

    with _quiet():
        return torch.jit.load(str(path), map_location=device).eval()


def _optimize_for_cpu(module: Any) -> Any:
    """Apply oneDNN rewrites (conv+bn folding, MKLDNN layouts); quick, so done on every load."""
    import torch

    with _quiet():
        return torch.jit.optimize_for_inference(module)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.jit warns that it is deprecated on every call (save, load, trace); the run log need not repeat it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
