"""torch.compile with the Inductor backend on CPU and CUDA, compiled inside ``prepare``.

Compilation is lazy in torch.compile: it happens on the first call. ``prepare`` therefore calls the
compiled function once on the cell's example input (under ``inference_mode``, as the runner does; with
``cuda_graph``, the capture's first warm-up call on the graph's own input buffer), so that compile time lands in prepare (timed by the harness) and never in the first timed
iteration; it is also logged and kept as ``runner.compile_s``.

Options (``torch_compile:fp32:max-autotune``, ``torch_compile:fp16:mode=reduce-overhead``...):

- ``default`` | ``max-autotune`` | ``reduce-overhead`` (or ``mode=...``): Inductor's modes.
  ``reduce-overhead`` (CUDA graphs) exists only on CUDA and is refused on the CPU.
- ``nofreeze`` / ``freeze``: Inductor freezing (weights become constants: batch norms folded into
  convolutions, and on the CPU weights pre-packed for oneDNN) is on by default: on the CPU it is
  the whole gain, and on CUDA it helps too.
- ``noprefold``: with freezing, the batch norms are folded into the convolutions before compiling, in
  FP32 on the CPU (``cudnn_fusion.fold_batch_norms``, for a model torch.fx can trace): the same fold
  freezing would do inside every compile, where it is most of a warm compile's time (dynamo traces,
  AOTAutograd and constant folding run on every batch norm's parameters again each time).
  ``noprefold`` leaves them to freezing, as torch.compile alone would.
- ``dynamic``: mark the batch dimension dynamic (``torch._dynamo.mark_dynamic``), so one compiled
  graph serves every batch size >= 2 in this process (batch 1 is always specialised by dynamo and
  recompiles); off by default (slower at batch 8, and each cell compiles anyway).
- ``channels_last``: NHWC memory format (the fast layout for fp16 convolutions on CUDA).
- ``cuda_graph``: capture the compiled forward pass in one CUDA graph ourselves
  (``torch_common.CudaGraphCall``) and replay it (batch 1 is launch-bound without it). It composes with
  freezing and the default mode; ``reduce-overhead`` is Inductor's own CUDA-graph mode.
- ``cudnn_fused`` (CUDA): run the ``cudnn_fusion`` pass first (BatchNorm folded, conv+bias(+add)+ReLU as
  cuDNN's fused calls), then compile: Inductor keeps the cuDNN calls as extern kernels and fuses what is
  left (pooling, the stem's padding, the head); it also compiles faster (fewer Triton kernels).

Inductor's on-disk caches (FX graph cache, autotuning results, generated kernels) are kept in the run's
models dir (``configure_inductor_caches``), so a rerun, and another variant compiling the same graph,
skip code generation; ``--no-cache`` switches them off.

How freezing is switched on, and why twice: Inductor reads ``torch._inductor.config.freezing`` when
it compiles, but dynamo reads it too, earlier, when it traces (``is_parameter_freezing``: only then
are the parameters marked static and guarded, so Inductor can fold them). ``torch.compile(options=
{"freezing": True})`` reaches Inductor only, and measured no gain at all (docs/results/cpu.md). So the
options carry the Inductor settings for every compile, and with freezing on every call of the runner runs inside
``torch._inductor.config.patch(freezing=True)`` (microseconds a call), so that a recompile
triggered later (another batch size with ``dynamic``, a verification batch of another size) is
traced for freezing too. ``mode`` and ``options`` cannot both be given to torch.compile, so the mode
is expanded with ``list_mode_options`` first, as torch.compile does internally.

Why these defaults (freezing on, static shapes, no max-autotune in the default ladder), with the
measurements behind them: docs/results/cpu.md ("torch.compile's options") and docs/results/h200.md.
"""

from __future__ import annotations

import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infertune.backends.base import Backend, PrepareContext, Runner
from infertune.backends.registry import register_backend
from infertune.backends.torch_common import (
    TF32_CPU_REASON,
    TorchRunner,
    model_copy,
    torch_dtype,
    wants_cuda_graph,
)
from infertune.errors import ConfigError

MODES = ("default", "max-autotune", "reduce-overhead")
#: Inductor's cache folder inside the models dir (see ``configure_inductor_caches``).
INDUCTOR_CACHE_DIR = "inductor"
#: option -> allowed values ("" = a bare word).
ALLOWED_OPTIONS: dict[str, tuple[str, ...]] = {
    "mode": MODES,
    **{m: ("",) for m in MODES},
    "freeze": ("",),
    "nofreeze": ("",),
    "noprefold": ("",),
    "dynamic": ("",),
    "channels_last": ("",),
    "cuda_graph": ("",),
    "cudnn_fused": ("",),
}


@dataclass(frozen=True)
class CompileOptions:
    """A torch.compile variant's options, validated."""

    mode: str = "default"
    freeze: bool = True
    dynamic: bool = False
    channels_last: bool = False
    cuda_graph: bool = False
    cudnn_fused: bool = False
    #: fold the batch norms before compiling (with freezing only: option ``noprefold``)
    prefold: bool = True

    def inductor_options(self) -> dict[str, Any]:
        """Inductor config for ``torch.compile(options=...)``: the mode's settings plus freezing."""
        from torch._inductor import list_mode_options

        base = list_mode_options(self.mode) if self.mode != "default" else {}
        return {**base, "freezing": self.freeze}


def check_options(backend: str, options: dict[str, str], allowed: dict[str, tuple[str, ...]]) -> None:
    """Raise ConfigError for an option (or value) that is not in ``allowed``, listing the allowed ones."""
    for key, value in options.items():
        if key not in allowed:
            names = ", ".join(
                f"{k}={'|'.join(v)}" if any(v) else k for k, v in allowed.items()
            )
            raise ConfigError(f"{backend}: unknown option {key!r}; allowed options: {names}")
        if value not in allowed[key]:
            shown = ", ".join(repr(v) for v in allowed[key] if v) or "no value (a bare word)"
            raise ConfigError(f"{backend}: option {key!r} got {value!r}; allowed: {shown}")


def parse_options(backend: str, options: dict[str, str], device: str) -> CompileOptions:
    """Validate the options of a ``torch_compile`` or ``aoti`` variant for ``device``."""
    check_options(backend, options, ALLOWED_OPTIONS)
    modes = [m for m in MODES if m in options]
    if "mode" in options:
        modes.append(options["mode"])
    if len(set(modes)) > 1:
        raise ConfigError(f"{backend}: choose one mode, got {', '.join(sorted(set(modes)))}")
    mode = modes[0] if modes else "default"
    if mode == "reduce-overhead" and device != "cuda":
        raise ConfigError(
            f"{backend}: mode 'reduce-overhead' uses CUDA graphs and only exists on CUDA; "
            f"on {device} use 'default' or 'max-autotune'"
        )
    if "freeze" in options and "nofreeze" in options:
        raise ConfigError(f"{backend}: options 'freeze' and 'nofreeze' exclude each other")
    cuda_graph = wants_cuda_graph(backend, options, device)
    if cuda_graph and mode == "reduce-overhead":
        raise ConfigError(
            f"{backend}: option 'cuda_graph' captures a CUDA graph itself; it cannot be combined with "
            "'reduce-overhead' (Inductor's own CUDA graphs)"
        )
    if cuda_graph and "dynamic" in options and backend != "torch_compile":
        raise ConfigError(f"{backend}: option 'cuda_graph' captures one static graph per batch size; it cannot be "
                          "combined with 'dynamic'")
    if "cudnn_fused" in options and device != "cuda":
        raise ConfigError(
            f"{backend}: option 'cudnn_fused' calls cuDNN's fused convolutions, which exist only on CUDA "
            f"(this run is on {device}); leave it out")
    freeze = "nofreeze" not in options
    if "noprefold" in options and not freeze:
        raise ConfigError(f"{backend}: option 'noprefold' leaves the batch norms to freezing, which 'nofreeze' "
                          "switches off (batch norms are folded only with freezing); leave one out")
    return CompileOptions(mode, freeze, "dynamic" in options, "channels_last" in options, cuda_graph,
                          "cudnn_fused" in options, prefold=freeze and "noprefold" not in options)


class InductorBackend(Backend):
    """What the two Inductor backends (torch_compile, aoti) share: torch only, CPU and CUDA, no CPU fp16/tf32."""

    requires = ("torch",)
    install_hint = "pip install torch==2.14.1"
    compiles = True
    devices = frozenset({"cpu", "cuda"})
    precisions = frozenset({"fp32", "tf32", "fp16", "bf16"})
    unsupported = {
        ("cpu", "fp16"): "no fast fp16 path on the CPU; use bf16 or fp32",
        ("cpu", "tf32"): TF32_CPU_REASON,
    }


@register_backend
class TorchCompileBackend(InductorBackend):
    name = "torch_compile"
    label = "torch.compile"
    description = ("torch.compile (Inductor) on CPU or CUDA; compiled in prepare, freezing on by default; cuda_graph and "
                   "cudnn_fused (CUDA) options.")

    def default_variants(self, device: str) -> list[str]:
        # max-autotune is not in the default ladder: on CUDA it takes minutes per batch size.
        if device == "cuda":
            return ["torch_compile:fp16:channels_last", "torch_compile:fp16:channels_last:cuda_graph",
                    "torch_compile:fp16:channels_last:cudnn_fused:cuda_graph"]
        return ["torch_compile:fp32"]

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        parse_options(self.name, options, device)

    def prepare(self, ctx: PrepareContext) -> Runner:
        opts = parse_options(self.name, ctx.options, ctx.device)
        self.check(ctx.device, ctx.precision)
        import torch

        configure_inductor_caches(ctx.cache)
        size_compile_pool(ctx.threads)
        shared = _SHARED.setdefault(ctx.model, {}) if opts.cuda_graph else {}
        key = (ctx.precision, ctx.device, tuple(sorted(ctx.options.items())))
        compiled = shared.get(key)
        reused = compiled is not None
        if compiled is None:
            source = ctx.model
            if opts.cudnn_fused:
                from infertune.backends.cudnn_fused import fuse_model
                from infertune.backends.cudnn_fusion import register_shape_functions

                register_shape_functions()
                source = fuse_model(ctx, self.name)
            elif opts.prefold:
                source = prefolded(ctx, self.name)
            model = model_copy(source, ctx.device, ctx.precision, opts.channels_last)
            # dynamic=False: no automatic dynamic shapes; only the batch dimension is made dynamic, by
            # mark_dynamic (which dynamic=False still honours): with option 'dynamic', and in a CUDA graph
            compiled = torch.compile(model, backend="inductor", options=opts.inductor_options(), dynamic=False)
            shared[key] = compiled
        fn = FreezingCall(compiled) if opts.freeze else compiled
        runner = TorchRunner(fn, ctx.device, torch_dtype(ctx.precision), opts.channels_last)
        example = runner.to_native(ctx.example_input)
        # in a CUDA graph every batch size above 1 shares one compiled graph (dynamo specialises batch 1):
        # the replayed kernels ran as fast as per-size graphs on the H200 (docs/results/h200.md)
        dynamic = opts.dynamic or (opts.cuda_graph and ctx.batch_size > 1)
        if dynamic and not opts.cuda_graph:
            for tensor in example if isinstance(example, tuple) else (example,):
                torch._dynamo.mark_dynamic(tensor, 0)
        before = _fx_cache_counts()
        start = time.perf_counter()
        if opts.cuda_graph:
            # compiles in the capture's first warm-up call, on the input buffer the graph keeps: a first call
            # on ``example`` itself would compile a graph that is never used (dynamo guards on the input
            # being an inference tensor, as the captured buffer is), doubling the compile time
            runner.capture_cuda_graph(example, dynamic_batch=dynamic)
        else:
            runner(example)  # compiles now, inside prepare, not in the first timed call
        runner.synchronize()
        runner.compile_s = time.perf_counter() - start
        # a hit: no graph needed fresh code generation (served by the FX graph cache, or by code
        # dynamo had already compiled in this process)
        runner.cache_hit = _fx_cache_counts()[1:] == before[1:]
        ctx.log(
            f"torch_compile: {'reused the variant' + chr(39) + 's compiled module' if reused else 'compiled'} "
            f"({opts.mode}, freezing {'on' if opts.freeze else 'off'}"
            f"{', dynamic batch' if dynamic else ''}{', in a CUDA graph' if opts.cuda_graph else ''})"
            f" in {runner.compile_s:.1f} s"
            f"{' (no new code generated: cache hit)' if runner.cache_hit else ''}"
        )
        return runner


#: the compiled modules of this worker's CUDA-graph variants, per source model and (precision, device,
#: options): the variant's later batch sizes reuse its dynamic-batch graph instead of compiling again.
_SHARED: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


def prefolded(ctx: PrepareContext, backend: str) -> Any:
    """The cell's FP32 model with its batch norms folded into the convolutions before them (option
    ``noprefold`` says why); the model itself when none fold or torch.fx cannot trace it (freezing folds
    them then, as without the step). Logs what it did."""
    from infertune.backends.cudnn_fusion import Untraceable, fold_batch_norms

    start = time.perf_counter()
    try:
        folded, count = fold_batch_norms(ctx.model)
    except Untraceable as err:
        ctx.log(f"{backend}: batch norms left to freezing: {err}")
        return ctx.model
    if count:
        ctx.log(f"{backend}: {count} batch norm(s) folded into convolutions before compiling, in "
                f"{time.perf_counter() - start:.1f} s")
    return folded


def configure_inductor_caches(cache: Any) -> Path | None:
    """Keep Inductor's on-disk caches (FX graph cache, autotuning results, generated kernels, Triton's
    binaries) in ``<models dir>/inductor`` so that a rerun reuses them; returns that folder.

    Set in the worker before anything compiles (Inductor reads ``TORCHINDUCTOR_CACHE_DIR`` on each
    use; a build child inherits it). With the artifact cache off (``--no-cache``) Inductor's caches
    are switched off too, so every compile is cold.
    """
    import torch

    if not cache.enabled:
        os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"  # for a build child
        torch._inductor.config.force_disable_caches = True
        return None
    folder = Path(cache.root).resolve() / INDUCTOR_CACHE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return folder


def size_compile_pool(threads: int) -> None:
    """When the job has a share of the cores (``PrepareContext.threads`` below the cores it may use), give
    Inductor's compile pool that share, unless ``TORCHINDUCTOR_COMPILE_THREADS`` says otherwise.

    torch's default is min(32, cores) per process, started at the first compile even when every graph is a
    cache hit: a subprocess that imports torch again and forks its pool. With a worker per cell on a GPU, nine
    compiling workers started nine such pools on 16 cores beside two dozen other workers; one thread means no
    pool, and compiling in the worker itself (docs/results/h200.md, session 8).
    """
    import torch

    if "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ and threads < len(os.sched_getaffinity(0)):
        torch._inductor.config.compile_threads = max(1, threads)


class FreezingCall:
    """Calls a compiled module with ``torch._inductor.config.freezing`` on, so that dynamo traces
    every (re)compile for freezing; ``compiled`` is the ``torch.compile`` result."""

    def __init__(self, compiled: Any) -> None:
        import torch

        self.compiled = compiled
        self._patch = torch._inductor.config.patch

    def __call__(self, *inputs: Any) -> Any:
        with self._patch(freezing=True):
            return self.compiled(*inputs)


def _fx_cache_counts() -> tuple[int, int, int]:
    """Inductor's process-wide FX graph cache counters: (hits, misses, bypasses)."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return inductor["fxgraph_cache_hit"], inductor["fxgraph_cache_miss"], inductor["fxgraph_cache_bypass"]
