"""PyTorch eager under ``torch.inference_mode``: the baseline every speedup is measured against."""

from __future__ import annotations

from infertune.backends.base import Backend, PrepareContext, Runner
from infertune.backends.registry import register_backend
from infertune.backends.torch_common import TorchRunner, model_copy, torch_dtype
from infertune.errors import ConfigError


@register_backend
class PyTorchBackend(Backend):
    name = "pytorch"
    label = "PyTorch"
    description = "Eager PyTorch under torch.inference_mode (the baseline)."
    requires = ("torch",)
    install_hint = "pip install torch==2.14.1"
    devices = frozenset({"cpu", "cuda"})
    precisions = frozenset({"fp32", "fp16", "bf16"})

    def default_variants(self, device: str) -> list[str]:
        return ["pytorch:fp32"] + (["pytorch:fp16:channels_last"] if device == "cuda" else [])

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        unknown = sorted(set(options) - {"channels_last"})
        if unknown:
            raise ConfigError(f"pytorch: unknown option(s) {', '.join(unknown)}; allowed: channels_last")

    def prepare(self, ctx: PrepareContext) -> Runner:
        self.check(ctx.device, ctx.precision)
        channels_last = "channels_last" in ctx.options
        model = model_copy(ctx.model, ctx.device, ctx.precision, channels_last)
        return TorchRunner(model, ctx.device, torch_dtype(ctx.precision), channels_last)
