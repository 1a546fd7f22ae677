"""PyTorch eager under ``torch.inference_mode``: the baseline every speedup is measured against.

Options: ``channels_last`` (NHWC, the fast layout for fp16/bf16 convolutions on tensor cores) and
``cuda_graph`` (CUDA only: the whole forward pass captured once and replayed, which removes the
per-kernel launch cost that dominates small batches; see ``torch_common.CudaGraphCall``).
"""

from __future__ import annotations

from infertune.backends.base import Backend, PrepareContext, Runner
from infertune.backends.registry import register_backend
from infertune.backends.torch_common import (
    TF32_CPU_REASON,
    TorchRunner,
    parse_eager_options,
    shared_model_copy,
    torch_dtype,
)


@register_backend
class PyTorchBackend(Backend):
    name = "pytorch"
    label = "PyTorch"
    description = "Eager PyTorch under torch.inference_mode (the baseline); channels_last, cuda_graph options."
    requires = ("torch",)
    writes_artifacts = False
    install_hint = "pip install torch==2.14.1"
    devices = frozenset({"cpu", "cuda"})
    precisions = frozenset({"fp32", "tf32", "fp16", "bf16"})
    unsupported = {("cpu", "tf32"): TF32_CPU_REASON}

    def default_variants(self, device: str) -> list[str]:
        if device != "cuda":
            return ["pytorch:fp32"]
        return [
            "pytorch:fp32",
            "pytorch:tf32",
            "pytorch:fp16:channels_last",
            "pytorch:bf16:channels_last",
            "pytorch:fp16:channels_last:cuda_graph",
        ]

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        parse_eager_options(self.name, options, device)

    def prepare(self, ctx: PrepareContext) -> Runner:
        channels_last, cuda_graph = parse_eager_options(self.name, ctx.options, ctx.device)
        self.check(ctx.device, ctx.precision)
        model = shared_model_copy(ctx.model, ctx.device, ctx.precision, channels_last)
        runner = TorchRunner(model, ctx.device, torch_dtype(ctx.precision), channels_last)
        if cuda_graph:
            runner.capture_cuda_graph(runner.to_native(ctx.example_input))
        return runner

