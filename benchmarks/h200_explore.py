"""Where the time goes for ResNet50 on one CUDA GPU: hand-built variants side by side, a profile, FLOPs.

Not part of the tool: the measurements that decided the GPU ladder's defaults (docs/results/h200.md).
Each section appends one JSON line to ``$OUT/explore.jsonl`` as soon as it is measured, so a call cut
short by its time limit still returns what it finished.

Usage (device machine): OUT=/tmp/out python3 benchmarks/h200_explore.py [section ...]
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

OUT = Path(os.environ.get("OUT", "/tmp/explore"))
OUT.mkdir(parents=True, exist_ok=True)
LOG = OUT / "explore.jsonl"
T0 = time.perf_counter()


def emit(**rec: object) -> None:
    rec["t_s"] = round(time.perf_counter() - T0, 1)
    line = json.dumps(rec)
    print(line, flush=True)
    with LOG.open("a") as f:
        f.write(line + "\n")


def base_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval()


def half_cl(m: torch.nn.Module, dtype=torch.float16) -> torch.nn.Module:
    return copy.deepcopy(m).cuda().to(dtype).to(memory_format=torch.channels_last)


def inp(batch: int, dtype=torch.float16) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)


def timed(fn, x, iters: int = 40, warm: int = 10) -> dict[str, float]:
    """Per-call CUDA-event ms (median) and synchronised host ms (median), plus pipelined ms per call."""
    with torch.inference_mode():
        for _ in range(warm):
            fn(x)
        torch.cuda.synchronize()
        dev, host = [], []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            a.record()
            fn(x)
            b.record()
            torch.cuda.synchronize()
            host.append((time.perf_counter() - t0) * 1e3)
            dev.append(a.elapsed_time(b))
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x)
        torch.cuda.synchronize()
        piped = (time.perf_counter() - t0) * 1e3 / iters
    return {"device_ms": statistics.median(dev), "host_ms": statistics.median(host), "pipelined_ms": piped}


def record(name: str, batch: int, fn, x, **extra: object) -> None:
    r = timed(fn, x)
    emit(name=name, batch=batch, img_s=round(batch / r["device_ms"] * 1e3), **{k: round(v, 4) for k, v in r.items()},
         **extra)


def graphed(fn, x):
    """Capture ``fn(x)`` in a CUDA graph; returns a replay function over a static input."""
    static = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(s):
        for _ in range(3):
            fn(static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(g):
        out = fn(static)

    def replay(inp_):
        if inp_ is not static:
            static.copy_(inp_)
        g.replay()
        return out

    return replay


def ts_frozen(m, x):
    with torch.inference_mode(False), torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(m, x, check_trace=False).eval())


def section_eager(m):
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        for batch in (1, 256):
            x = inp(batch)
            record("eager_fp16_cl", batch, half_cl(m), x, cudnn_benchmark=bench)
    torch.backends.cudnn.benchmark = True
    x = inp(256, torch.bfloat16)
    record("eager_bf16_cl", 256, half_cl(m, torch.bfloat16), x, cudnn_benchmark=True)
    # conv+bn folded (torch.fx), still eager kernels
    from torch.fx.experimental.optimization import fuse

    fused = fuse(copy.deepcopy(m).eval())
    for batch in (1, 256):
        record("eager_fp16_cl_bnfold", batch, half_cl(fused), inp(batch), cudnn_benchmark=True)
    record("eager_fp16_cl_graph", 1, graphed(half_cl(fused), inp(1)), inp(1), cudnn_benchmark=True, bnfold=True)


def section_torchscript(m):
    torch.backends.cudnn.benchmark = True
    for batch in (1, 256, 512):
        x = inp(batch)
        t = ts_frozen(half_cl(m), x)
        record("torchscript_frozen_fp16_cl", batch, t, x)
        if batch == 1:
            record("torchscript_frozen_fp16_cl_graph", 1, graphed(t, x), x)


def section_compile(m, mode: str = "default"):
    torch.backends.cudnn.benchmark = True
    import torch._inductor.config as ic

    for freeze in (True,):
        for batch in (256, 1):
            torch._dynamo.reset()
            mm = half_cl(m)
            opts = {"freezing": freeze}
            if mode == "max-autotune":
                from torch._inductor import list_mode_options

                opts = {**list_mode_options("max-autotune-no-cudagraphs"), **opts}
            c = torch.compile(mm, options=opts, dynamic=False)
            x = inp(batch)
            t0 = time.perf_counter()
            with ic.patch(freezing=freeze), torch.inference_mode():
                c(x)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0

            def call(t, c=c, freeze=freeze):
                with ic.patch(freezing=freeze):
                    return c(t)

            record(f"compile_{mode}_fp16_cl", batch, call, x, freezing=freeze, compile_s=round(compile_s, 1))
            if batch == 1:
                record(f"compile_{mode}_fp16_cl_graph", 1, graphed(call, x), x, freezing=freeze)
            elif mode == "default":
                for big in (512, 1024):
                    xb = inp(big)
                    with ic.patch(freezing=freeze), torch.inference_mode():
                        c(xb)
                    record(f"compile_{mode}_fp16_cl", big, call, xb, freezing=freeze)


def section_profile(m):
    """Kernel time by category for TorchScript frozen fp16 at batch 256, and FLOPs per image."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        copy.deepcopy(m)(torch.randn(1, 3, 224, 224))
    gflop = fc.get_total_flops() / 1e9
    emit(name="flops", gflop_per_image=round(gflop, 3))
    torch.backends.cudnn.benchmark = True
    x = inp(256)
    t = ts_frozen(half_cl(m), x)
    with torch.inference_mode():
        for _ in range(5):
            t(x)
        torch.cuda.synchronize()
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                t(x)
            torch.cuda.synchronize()
    cats: dict[str, float] = {}
    top = []
    for e in prof.key_averages():
        us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        if us <= 0:
            continue
        n = e.key.lower()
        cat = ("conv/gemm" if any(k in n for k in ("conv", "gemm", "xmma", "cutlass", "sm90", "implicit", "wgrad", "dgrad",
                                                     "fprop"))
               else "elementwise/other")
        cats[cat] = cats.get(cat, 0.0) + us / 5
        top.append((us / 5, e.key[:90], e.count // 5))
    top.sort(reverse=True)
    emit(name="profile_ts_fp16_b256", per_batch_us=cats, top=[(round(a, 1), k, c) for a, k, c in top[:12]],
         tflops_achieved=round(gflop * 256 / (sum(cats.values()) / 1e6) / 1e3, 1))


SECTIONS = {
    "eager": section_eager,
    "torchscript": section_torchscript,
    "profile": section_profile,
    "compile": section_compile,
    "autotune": lambda m: section_compile(m, "max-autotune"),
}

if __name__ == "__main__":
    emit(name="env", torch=torch.__version__, gpu=torch.cuda.get_device_name(0))
    model = base_model()
    for sec in sys.argv[1:] or list(SECTIONS):
        try:
            SECTIONS[sec](model)
        except Exception as err:  # noqa: BLE001 - one broken section must not lose the others
            emit(name=f"{sec}_failed", error=f"{type(err).__name__}: {err}"[:400])
