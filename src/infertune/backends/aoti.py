"""AOTInductor: export here, compile a ``.pt2`` package in a child process, load it and run it.

This is the deployable form of Inductor: a package with a compiled shared library and the weights,
loaded with ``torch._inductor.aoti_load_package`` and run without dynamo or a Python-level compile.
To measure (and prove) exactly that, the package is compiled in a *different process* from the one
that loads and times it, so nothing compiled in-process can leak into the measured runner.

How the child gets the model: the parent runs ``torch.export.export`` and saves the ExportedProgram
with ``torch.export.save``; the child (``python -m infertune.backends.aoti_build``) loads it with
``torch.export.load`` and runs ``aoti_compile_and_package``. Chosen over pickling the module or
re-building it in the child because the ExportedProgram is a versioned, self-contained file (graph +
weights) that needs no import of the model's Python class, so it works for any model source
(torchvision names, ``module:function`` factories, user weights); it is also exactly what
AOTInductor consumes, and export errors (unsupported ops, graph breaks) surface in the parent with
an ordinary traceback. The exported file is deleted once the package is built.

The package is cached (``ctx.cache``) by torch version, precision, device, thread count (Inductor's
CPU kernels bake the OpenMP thread count in), resolved options, and the input shape, or only the
per-sample shape with option ``dynamic`` (one package with a dynamic batch serves every batch size).
The child also loads the package and runs it once before the parent trusts it (a crash while
loading native code then kills the child, not the measuring process; see ``aoti_build``). The
child's pid is recorded in the cache manifest (``builder_pid``); its stderr, or the signal that
killed it, is put into the error when it fails. Freezing is on by default on the CPU, as for ``torch_compile``.

Options: ``freeze``/``nofreeze``, ``dynamic``, ``channels_last``, ``max-autotune`` (or ``mode=``);
``reduce-overhead`` (CUDA graphs) is a torch.compile runtime feature that a package does not have.

Why freezing and static shapes are the defaults on the CPU: frozen, the package runs as fast as the
in-process torch.compile, and without freezing it gains nothing at batch 1 and less at batch 8; a
``dynamic`` package is built once and serves every batch size, but runs slower, most at batch 1 (oneDNN
weight pre-packing wants static shapes). A build takes many seconds, a cache hit a fraction of one.
Measurements: docs/results/cpu.md ("AOTInductor's defaults").

CUDA (one H200, torch 2.11): the package compiles in the child (build times in docs/results/h200.md), but
``aoti_load_package`` segfaults there, also for a tiny model and in the process that compiled it,
so no CUDA numbers; the child's trial run turns that crash into an error row, which names the cause
found (``KNOWN_LOAD_CRASHES``; the backtrace is in docs/results/h200.md). A package that compiled
and then crashed its loader is not rebuilt for the next batch sizes, nor by a later run on the same
cache (same torch, precision, device and options: the same loader; ``LoadCrashes``, a file in the
model's cache): those rows fail at once with the same reason, instead of each spending a long build
on a package that cannot be loaded. ``--no-cache`` (or deleting the file) tries again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from infertune.backends.aoti_build import COMPILED_MARKER
from infertune.backends.base import PrepareContext, Runner
from infertune.backends.registry import register_backend
from infertune.backends.torch_common import (
    TorchRunner,
    model_copy,
    to_tensors,
    torch_dtype,
)
from infertune.backends.torch_compile import (
    ALLOWED_OPTIONS,
    CompileOptions,
    InductorBackend,
    check_options,
    configure_inductor_caches,
    parse_options,
    prefolded,
)
from infertune.errors import ConfigError

#: torch_compile's options less CUDA graphs (a package has no such runtime) and the cuDNN fusion pass
#: (AOTInductor's C++ wrapper has no shim for the fused cuDNN calls).
AOTI_OPTIONS: dict[str, tuple[str, ...]] = {
    **{k: v for k, v in ALLOWED_OPTIONS.items() if k not in ("reduce-overhead", "cudnn_fused")},
    "mode": ("default", "max-autotune"),
}
#: how long the child may compile before it is killed (max-autotune on CUDA can take minutes).
DEFAULT_BUILD_TIMEOUT_S = 3600
#: what was found about packages that compile and then crash when loaded, by torch minor version.
KNOWN_LOAD_CRASHES = {
    "2.11": (
        "cause found on torch 2.11 + CUDA 13 (H200 image, cuda-gdb backtrace in docs/results/h200.md): the "
        "package's wrapper.so carries its own static libstdc++ (no libstdc++.so in its ldd); its constructor "
        "(AOTInductorModel -> parse_device_str) builds a std::regex, whose locale lookup mixes that copy with "
        "the process's libstdc++.so.6 and jumps into codecvt<char16_t>::do_unshift"
    ),
}
#: where a model's cache remembers the packages that compiled and then crashed their loader.
LOAD_CRASHES_FILE = "load-crashes.json"


class LoadCrashes:
    """Packages that compiled and then crashed their loader: crash key -> the row's reason.

    Kept in memory for the worker's next batch sizes and, with the cache on, in ``LOAD_CRASHES_FILE``
    beside the model's packages for later runs."""

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / LOAD_CRASHES_FILE if folder is not None else None
        self.known: dict[str, str] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.known = dict(json.loads(self.path.read_text()))
            except (ValueError, TypeError):
                self.known = {}  # a damaged record only costs a rebuild

    def reason(self, key: str) -> str:
        return self.known.get(key, "")

    def remember(self, key: str, reason: str) -> None:
        self.known[key] = reason
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.known, indent=1))


#: this worker's memory when the cache is off (--no-cache): the next batch sizes still skip the build.
_SESSION_CRASHES = LoadCrashes(None)


def parse_aoti_options(options: dict[str, str], device: str) -> CompileOptions:
    """Validate an ``aoti`` variant's options (ConfigError names the bad option and the allowed ones)."""
    if "reduce-overhead" in options or options.get("mode") == "reduce-overhead":
        raise ConfigError(
            "aoti: 'reduce-overhead' (CUDA graphs) is a torch.compile runtime mode; an AOTInductor "
            "package cannot use it. Use torch_compile:...:reduce-overhead, or aoti with 'default'/'max-autotune'"
        )
    check_options("aoti", options, AOTI_OPTIONS)
    return parse_options("aoti", options, device)


@register_backend
class AotiBackend(InductorBackend):
    name = "aoti"
    label = "AOTInductor"
    description = "torch.export + AOTInductor .pt2 package, compiled in a child process, loaded and run."

    def default_variants(self, device: str) -> list[str]:
        return ["aoti:fp16"] if device == "cuda" else ["aoti:fp32"]

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        parse_aoti_options(options, device)

    def prepare(self, ctx: PrepareContext) -> Runner:
        opts = parse_aoti_options(ctx.options, ctx.device)
        self.check(ctx.device, ctx.precision)
        import torch

        configure_inductor_caches(ctx.cache)  # the build child inherits the folder

        entry = ctx.cache.entry(
            "aoti",
            torch=torch.__version__,
            precision=ctx.precision,
            device=ctx.device,
            threads=ctx.threads,
            # a CUDA graph is captured at load time: the same package serves it
            options=dataclasses.asdict(dataclasses.replace(opts, cuda_graph=False)),
            shape=("dynamic-batch", *ctx.input_shape[1:]) if opts.dynamic else ctx.input_shape,
            **({"inputs": ctx.input_signature} if isinstance(ctx.example_input, dict) else {}),
        )
        package = entry.file("model.pt2")
        crash_key = json.dumps([torch.__version__, ctx.precision, ctx.device, dataclasses.asdict(opts)])
        crashes = LoadCrashes(entry.path.parent) if ctx.cache.enabled else _SESSION_CRASHES
        if entry.hit:
            ctx.log(f"aoti: reusing cached package {package}")
        elif crashes.reason(crash_key):
            where = f" (remembered in {crashes.path}; delete it or use --no-cache to try again)" if crashes.path else ""
            raise RuntimeError(f"aoti: not built again for batch {ctx.batch_size}: {crashes.reason(crash_key)}{where}")
        else:
            meta = _build_package(ctx, opts, entry.path, package, crash_key, crashes)
            entry.commit(meta)
        loaded = torch._inductor.aoti_load_package(str(package))
        runner = TorchRunner(loaded, ctx.device, torch_dtype(ctx.precision), opts.channels_last)
        if opts.cuda_graph:
            runner.capture_cuda_graph(runner.to_native(ctx.example_input))
        runner.artifact_path = package
        runner.cache_hit = entry.hit
        return runner


def _build_package(ctx: PrepareContext, opts: CompileOptions, workdir: Path, package: Path,
                   crash_key: str, crashes: LoadCrashes) -> dict[str, Any]:
    """Export in this process, compile in a child; return the manifest metadata. A package that compiled
    and then crashed the child's trial load is remembered in ``crashes`` (see the module docstring)."""
    exported = workdir / "exported_program.pt2"
    start = time.perf_counter()
    _export(ctx, opts, exported)
    export_s = time.perf_counter() - start
    meta_path = workdir / "build.json"
    configs = _inductor_configs(opts)
    cmd = [
        # -X faulthandler: a crash in native code still prints the Python stack to stderr
        sys.executable, "-X", "faulthandler", "-m", "infertune.backends.aoti_build",
        "--exported", str(exported), "--package", str(package), "--meta", str(meta_path),
        "--configs", json.dumps(configs), "--threads", str(ctx.threads),
    ]
    timeout = float(ctx.settings.get("aoti", {}).get("build_timeout_s", DEFAULT_BUILD_TIMEOUT_S))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(), timeout=timeout, check=False)
    exported.unlink(missing_ok=True)
    if proc.returncode != 0 or not package.is_file():
        output = (proc.stderr or proc.stdout or "").strip()
        message = _failure_message(proc.returncode, output)
        if proc.returncode < 0 and COMPILED_MARKER in output:
            crashes.remember(crash_key, message.splitlines()[0])
        raise RuntimeError(message)
    meta = json.loads(meta_path.read_text())
    ctx.log(f"aoti: exported in {export_s:.1f} s, compiled in a child process (pid {meta['builder_pid']}) "
            f"in {meta['compile_s']:.1f} s")
    return {**meta, "export_s": round(export_s, 3), "parent_pid": os.getpid()}


def _failure_message(returncode: int, output: str) -> str:
    """One line saying what went wrong (the last stderr line, or the signal), then the stderr tail."""
    if returncode < 0:
        import signal

        # a crash in native code: the last stderr line is whatever was printed before it
        summary = f"killed by {signal.Signals(-returncode).name}"
    else:
        last = output.splitlines()[-1] if output else "no output"
        summary = f"exit status {returncode}: {last}"
    if returncode < 0 and COMPILED_MARKER in output:
        import torch

        known = KNOWN_LOAD_CRASHES.get(".".join(torch.__version__.split(".")[:2]), "")
        first = f"aoti: the package compiled, then crashed when loaded in the build child ({summary})"
        first += f"; {known}" if known else ""
    else:
        first = f"aoti: building the package in a child process failed ({summary})"
    return (
        f"{first}\n"
        f"--- the child's stderr (last 4000 characters) ---\n{output[-4000:]}"
    )


def _export(ctx: PrepareContext, opts: CompileOptions, path: Path) -> None:
    """``torch.export`` the model cast to the cell's device/precision, saved for the child."""
    import torch

    from infertune.inputs import batch_size, concat

    source = prefolded(ctx, "aoti") if opts.prefold else ctx.model
    model = model_copy(source, ctx.device, ctx.precision, opts.channels_last)
    batch = ctx.example_input
    if opts.dynamic and batch_size(batch) < 2:
        batch = concat([batch, batch])  # a batch of 1 would be specialised (0/1 specialisation): trace 2 samples
    example = to_tensors(batch, ctx.device, torch_dtype(ctx.precision), opts.channels_last)
    args = example if isinstance(example, tuple) else (example,)
    dynamic_shapes = None
    if opts.dynamic:
        dim = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = tuple({0: dim} for _ in args)
    with torch.no_grad():
        program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
    torch.export.save(program, str(path))


def _inductor_configs(opts: CompileOptions) -> dict[str, Any]:
    """The mode's Inductor settings plus freezing, less CUDA graphs (torch.compile runtime only)."""
    configs = opts.inductor_options()
    configs.pop("triton.cudagraphs", None)
    return configs


def _child_env() -> dict[str, str]:
    """The parent's environment, with this copy of infertune first on the child's import path."""
    import infertune

    src = str(Path(infertune.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env
