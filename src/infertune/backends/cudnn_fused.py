"""cuDNN fused epilogues in eager PyTorch: the model rewritten by ``cudnn_fusion`` (BatchNorm folded,
conv+bias+ReLU and conv+bias+add+ReLU as single cuDNN calls), run eagerly, optionally in one CUDA graph.

A backend of its own rather than an option on ``pytorch``: ``pytorch`` rows are the untouched baseline
every speedup is measured against, and this one rewrites the model's graph. Inside torch.compile the
same pass is the ``torch_compile`` option ``cudnn_fused`` (Inductor then fuses what is left around
the cuDNN calls). CUDA only: the fused calls exist only in cuDNN. Options: ``channels_last`` (NHWC,
the layout cuDNN's fp16 kernels want) and ``cuda_graph`` (``torch_common.CudaGraphCall``).
"""

from __future__ import annotations

import time

from infertune.backends.base import Backend, PrepareContext, Runner
from infertune.backends.registry import register_backend
from infertune.backends.torch_common import (
    TorchRunner,
    model_copy,
    parse_eager_options,
    torch_dtype,
)


@register_backend
class CudnnFusedBackend(Backend):
    name = "cudnn_fused"
    label = "cuDNN fused"
    description = ("Eager PyTorch over an FX-rewritten model: BatchNorm folded, conv+bias(+add)+ReLU as cuDNN "
                   "fused calls (CUDA); channels_last, cuda_graph options.")
    requires = ("torch",)
    install_hint = "pip install torch==2.14.1"
    devices = frozenset({"cuda"})
    precisions = frozenset({"fp32", "tf32", "fp16", "bf16"})

    def default_variants(self, device: str) -> list[str]:
        return ["cudnn_fused:fp16:channels_last:cuda_graph"] if device == "cuda" else []

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        parse_eager_options(self.name, options, device)

    def prepare(self, ctx: PrepareContext) -> Runner:
        channels_last, cuda_graph = parse_eager_options(self.name, ctx.options, ctx.device)
        self.check(ctx.device, ctx.precision)
        fused = fuse_model(ctx, self.name)
        model = model_copy(fused, ctx.device, ctx.precision, channels_last)
        runner = TorchRunner(model, ctx.device, torch_dtype(ctx.precision), channels_last)
        if cuda_graph:
            runner.capture_cuda_graph(runner.to_native(ctx.example_input))
        return runner


def fuse_model(ctx: PrepareContext, backend: str) -> object:
    """The cell's FP32 model with the cuDNN fusion pass applied (on the CPU, in fp32); logs what it did."""
    import torch

    from infertune.backends.cudnn_fusion import fuse_for_cudnn

    start = time.perf_counter()
    example = torch.from_numpy(ctx.example_input[:1].copy())
    fused, counts = fuse_for_cudnn(ctx.model, example)
    ctx.log(f"{backend}: {counts.describe()} in {time.perf_counter() - start:.1f} s")
    return fused
