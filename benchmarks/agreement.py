"""Do the tool's timings agree with independent timers on the same work? (issue 12, item 8)

    python benchmarks/agreement.py [--rounds 3] [--batch-sizes 1 8] [--min-time 2] [--json-out FILE]

For ResNet50 (random weights, the run's own timed input) at each batch size, measured side by side:

- eager fp32: the tool's timer vs a bare ``perf_counter_ns`` loop and ``torch.utils.benchmark.Timer.
  blocked_autorange`` on the same module;
- ``onnxruntime:fp32``: the tool's timer vs a bare session loop on the tool's own cached ONNX file, once
  with the tool's session settings (spinning off) and once with a default session (spinning on);
- ``openvino:int8``: the tool's timer vs OpenVINO's own ``benchmark_app`` on the tool's own IR (one
  stream, latency hint, sync API, the same thread count, f32 for the float parts as the tool asks).

Rounds interleave: each round visits every (method, batch) in a shuffled order, each visit in a fresh
process, and each round gives one ratio per independent timer (tool p50 / independent p50). The printed
agreement is the median of those per-round ratios (a phase of the noisy VM then hits both sides of one
pair alike); the target is within 3%.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

#: target -> (the tool's variant, the independent timers measured against it)
TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "eager": ("pytorch:fp32", ("bare_loop", "torch_timer")),
    "ort": ("onnxruntime:fp32", ("ort_session_nospin", "ort_session_default")),
    "ov_int8": ("openvino:int8", ("benchmark_app",)),
}


# ---------------------------------------------------------------- child side: one method, one batch
def child(method: str, variant: str, batch: int, threads: int, min_time: float) -> dict[str, Any]:
    """Measure one method in this (fresh) process; return per-iteration samples in ms."""
    import torch
    from cpu_ladder import _model, tool_runner

    torch.set_num_threads(threads)
    model = _model()
    runner, native = tool_runner(variant, model, batch, threads)  # also builds/loads the tool's artifact
    if method == "tool":
        from infertune.measure.timer import TimingPolicy, measure

        timing = measure(runner, native, TimingPolicy(warmup_iterations=3, min_iterations=10, min_time_s=min_time))
        return {"samples_ms": timing.samples_ms, "artifact": str(runner.artifact_path or "")}
    host = _timed_batch(batch)
    if method == "bare_loop":
        x = torch.from_numpy(host)
        with torch.inference_mode():
            return {"samples_ms": _bare_loop(lambda: model(x), min_time)}
    if method == "torch_timer":
        from torch.utils import benchmark

        with torch.inference_mode():
            timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": torch.from_numpy(host)},
                                    num_threads=threads)
            m = timer.blocked_autorange(min_run_time=min_time)
        return {"samples_ms": [t * 1e3 for t in m.times]}  # per-call time of each block
    if method.startswith("ort_session"):
        session = _ort_session(Path(str(runner.artifact_path)), threads, default=method.endswith("default"))
        feed = {session.get_inputs()[0].name: host}
        return {"samples_ms": _bare_loop(lambda: session.run(None, feed), min_time)}
    raise SystemExit(f"unknown method {method}")


def _timed_batch(batch: int) -> Any:
    """The run's own timed input (the shipped photos, as ``infertune run`` uses them)."""
    from infertune.config import RunConfig
    from infertune.inputs import resolve_source

    cfg = RunConfig()
    source, _ = resolve_source((3, 224, 224), seed=cfg.verify.seed, inputs=cfg.verify.inputs,
                               verify_count=cfg.verify.samples)
    return source.timed_batch(batch)


def _bare_loop(call: Any, min_time: float, warmup: int = 3, min_iters: int = 10) -> list[float]:
    for _ in range(warmup):
        call()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def _ort_session(onnx_dir: Path, threads: int, default: bool) -> Any:
    """A session on the tool's ONNX file: the tool's settings (no spinning) or ORT's defaults."""
    import onnxruntime as ort

    files = sorted(onnx_dir.glob("*.onnx")) if onnx_dir.is_dir() else [onnx_dir]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    if not default:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(files[0]), so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- parent side
def run_child(method: str, variant: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", method, "--variant", variant, "--batch", str(batch),
           "--threads", str(args.threads), "--min-time", str(args.min_time)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{method} {variant} b{batch} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def benchmark_app(ir_dir: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """OpenVINO's own benchmark_app on the tool's IR: one stream, latency hint, sync API."""
    xml = sorted(Path(ir_dir).glob("*.xml"))[0] if Path(ir_dir).is_dir() else Path(ir_dir)
    exe = Path(sys.executable).with_name("benchmark_app")
    # the latency hint means one stream on all cores (benchmark_app refuses -nstreams/-nthreads beside a
    # hint); the tool compiles its INT8 IR with an explicit f32 hint for the float parts (compile_config)
    tune = ["-hint", "latency"] if args.threads == args.cores else \
        ["-hint", "none", "-nstreams", "1", "-nthreads", str(args.threads)]
    cmd = [str(exe), "-m", str(xml), "-d", "CPU", *tune, "-api", "sync", "-shape", f"[{batch},3,224,224]",
           "-t", str(max(1, round(args.min_time))), "-infer_precision", "f32"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    median = re.search(r"Median:\s+([\d.]+)\s*ms", proc.stdout)
    if proc.returncode != 0 or median is None:
        raise RuntimeError(f"benchmark_app failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return {"p50_ms": float(median.group(1))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child")
    p.add_argument("--variant")
    p.add_argument("--batch", type=int)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json-out")
    args = p.parse_args()
    from infertune.env import usable_cores

    args.cores = usable_cores()
    args.threads = args.threads or args.cores
    if args.child:
        print(json.dumps(child(args.child, args.variant, args.batch, args.threads, args.min_time)))
        return

    artifacts: dict[str, str] = {}
    for target in args.targets:  # build each artifact once, untimed, and learn where the tool keeps it
        variant = TARGETS[target][0]
        artifacts[target] = run_child("tool", variant, 1, argparse.Namespace(**{**vars(args), "min_time": 0.1}))[
            "artifact"]
    cells = [(t, m, b) for t in args.targets for m in ("tool", *TARGETS[t][1]) for b in args.batch_sizes]
    p50: dict[tuple[str, str, int], list[float]] = {c: [] for c in cells}
    rng = random.Random(0)
    for r in range(args.rounds):
        order = cells[:]
        rng.shuffle(order)
        for target, method, batch in order:
            if method == "benchmark_app":
                median = benchmark_app(artifacts[target], batch, args)["p50_ms"]
            else:
                median = statistics.median(run_child(method, TARGETS[target][0], batch, args)["samples_ms"])
            p50[(target, method, batch)].append(median)
            print(f"round {r + 1}/{args.rounds} {target:<8} {method:<20} b{batch:<3} p50 {median:8.2f} ms", flush=True)
    print(render(p50, args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"|".join(map(str, k)): v for k, v in p50.items()}))


def render(p50: dict[tuple[str, str, int], list[float]], args: argparse.Namespace) -> str:
    from infertune.env import capture

    env = capture(args.threads)
    lines = [f"Machine: {env['cpu_model']}, {env['usable_cores']} cores, ISA {', '.join(env['isa'])}; "
             f"{args.threads} threads; {args.rounds} interleaved rounds, {args.min_time} s per visit.", "",
             "| target | batch | independent timer | tool p50 (ms) | independent p50 (ms) | tool / independent "
             "(median of per-round ratios) | within 3% |", "|---|---:|---|---:|---:|---:|:-:|"]
    for target in args.targets:
        for batch in args.batch_sizes:
            tool = p50[(target, "tool", batch)]
            for method in TARGETS[target][1]:
                other = p50[(target, method, batch)]
                ratio = statistics.median(t / o for t, o in zip(tool, other))
                lines.append(f"| {TARGETS[target][0]} | {batch} | {method} | {statistics.median(tool):.2f} | "
                             f"{statistics.median(other):.2f} | {ratio:.3f} | {'yes' if abs(ratio - 1) <= 0.03 else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
