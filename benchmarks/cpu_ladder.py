"""Issue 3's speed benchmark: the tool's best default variant against the hand-tuned methods, side by side.

    python benchmarks/cpu_ladder.py [--rounds 3] [--batch-sizes 1 8] [--write-doc docs/results/cpu.md]

1. Runs ``infertune run`` with the default config (batch sizes 1 and 8) and takes, per batch size,
   the fastest variant whose outputs pass fidelity: the tool's answer with default settings.
2. Measures that variant and every hand-tuned reference method (``reference_methods.py``, written
   directly against each library) in interleaved rounds: each round visits every (method, batch) in a
   shuffled order, each visit in its own fresh process, and samples are pooled per method. This is
   what MEASUREMENT.md found works on a VM that is noisy in phases.
3. Prints, per batch size, every method's median and spread and the ratio tool-best / method, and
   optionally writes the table to a markdown file.

Numbers are ratios measured in one run; absolute milliseconds differ between machines and phases.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

CACHE = REPO / "benchmarks" / ".cache"
TOOL_PREFIX = "infertune:"


def _model() -> Any:
    from infertune.models import load_model

    return load_model("resnet50", pretrained=False, seed=0, warn=lambda m: None).module


# ---------------------------------------------------------------- child side: build or measure one method
def child(method: str, batch: int, threads: int, min_time: float, min_iters: int, build_only: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    model = _model()
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    call = _tool_call(method, model, batch, threads) if method.startswith(TOOL_PREFIX) else \
        _reference_call(method, model, batch, threads)
    build_s = time.perf_counter() - t0
    if build_only:
        print(json.dumps({"build_s": build_s}))
        return
    for _ in range(3):
        call()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_iters or time.perf_counter() - start < min_time:
        t = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t) / 1e6)
    print(json.dumps({"samples_ms": samples, "build_s": build_s}))


def _reference_call(method: str, model: Any, batch: int, threads: int) -> Any:
    from reference_methods import METHODS

    return METHODS[method][1](model, batch, threads, CACHE)


def _tool_call(method: str, model: Any, batch: int, threads: int) -> Any:
    """The tool's variant as a zero-argument call (see ``tool_runner``)."""
    runner, native = tool_runner(method.removeprefix(TOOL_PREFIX), model, batch, threads)

    def call() -> Any:
        out = runner(native)
        runner.synchronize()
        return out

    return call


def tool_runner(variant_name: str, model: Any, batch: int, threads: int) -> tuple[Any, Any]:
    """The tool's variant, prepared exactly as ``infertune run`` prepares it (same cache), and its timed
    input in the runner's native form."""
    from infertune.backends.base import PrepareContext
    from infertune.backends.registry import get_backend
    from infertune.cache import ArtifactCache
    from infertune.config import RunConfig
    from infertune.inputs import resolve_source
    from infertune.models import LoadedModel
    from infertune.variants import parse_variant

    cfg = RunConfig()
    variant = parse_variant(variant_name)
    digest = LoadedModel(model, "resnet50", "random", "torchvision").digest()
    source, _ = resolve_source((3, 224, 224), seed=cfg.verify.seed, inputs=cfg.verify.inputs,
                               verify_count=cfg.verify.samples)  # the run's default inputs (shipped photos)
    int8 = cfg.optimization.int8.model_dump()
    if variant.precision == "int8":  # the run keys INT8 artifacts by their calibration data
        int8["calibration_id"] = source.calibration_identity()
    ctx = PrepareContext(
        model=model, example_input=source.timed_batch(batch), precision=variant.precision,
        options=variant.option_dict, device="cpu", threads=threads,
        cache=ArtifactCache(REPO / cfg.output.models_dir, f"resnet50-{digest}"),
        calibration=source.calibration,
        settings={"onnx_opset": cfg.optimization.onnx_opset, "int8": int8},
        log=lambda m: None,
    )
    runner = get_backend(variant.backend).prepare(ctx)
    return runner, runner.to_native(ctx.example_input)


# ---------------------------------------------------------------- parent side
def run_child(method: str, batch: int, args: argparse.Namespace, build_only: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", method, "--batch", str(batch), "--threads", str(args.threads),
           "--min-time", str(args.min_time), "--min-iters", str(args.min_iters)]
    if build_only:
        cmd.append("--build-only")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{method} b{batch} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def tool_best(batches: list[int], results: str | None) -> tuple[dict[int, str], Path]:
    """Run the tool with default settings (or read a given results CSV) and pick its best per batch."""
    from infertune.report.table import best_variants
    from infertune.results import read_rows

    if results is None:
        out = REPO / "benchmarks" / ".out"
        cmd = [sys.executable, "-m", "infertune", "run", "--quiet", "-o", str(out),
               "--batch-size", *map(str, batches)]
        print("running the tool with default settings:", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
        results = str(sorted(out.glob("benchmark_results_*.csv"))[-1])
    rows = read_rows(results)
    best = {key[2]: row.variant for key, row in best_variants(rows).items()}
    missing = [b for b in batches if b not in best]
    if missing:
        raise SystemExit(f"the tool found no passing variant at batch sizes {missing} in {results}")
    return best, Path(results)


def main() -> None:
    from interleave import add_round_options, interleaved_rounds, parse_round_args
    from reference_methods import METHODS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_round_options(p)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parse_round_args(p)
    if args.child:
        child(args.child, args.batch, args.threads, args.min_time, args.min_iters, args.build_only)
        return

    best, results_csv = tool_best(args.batch_sizes, args.tool_results)
    print("tool's best per batch:", best, flush=True)
    cells = [(f"{TOOL_PREFIX}{best[b]}", b) for b in args.batch_sizes] + \
            [(m, b) for m in args.methods for b in args.batch_sizes]
    pooled = interleaved_rounds(cells, args.rounds, lambda m: run_child(m, 1, args, build_only=True),
                                lambda m, b: run_child(m, b, args)["samples_ms"])
    text = render(pooled, best, args, results_csv, METHODS)
    print(text)
    if args.write_doc:
        Path(args.write_doc).write_text(text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({f"{m}|{b}": s for (m, b), s in pooled.items()}))


def render(pooled: dict[tuple[str, int], list[float]], best: dict[int, str], args: argparse.Namespace,
           results_csv: Path, methods: dict[str, Any]) -> str:
    from interleave import summarize

    from infertune.env import capture

    env = capture(args.threads)
    lines = [
        "# ResNet50 on this CPU: infertune's best default variant vs hand-tuned methods",
        "",
        f"Machine: {env['cpu_model']}, {env['usable_cores']} cores, ISA {', '.join(env['isa'])}; "
        f"{args.threads} threads; torch {env['libraries'].get('torch')}, onnxruntime "
        f"{env['libraries'].get('onnxruntime')}, openvino {env['libraries'].get('openvino')}.",
        f"Method: `python benchmarks/cpu_ladder.py --rounds {args.rounds} --min-time {args.min_time}`; "
        f"{args.rounds} interleaved rounds, each (method, batch) in its own process per round, "
        "samples pooled; random weights, 224×224. Tool results from `" + results_csv.name + "`.",
        "",
    ]
    for b in args.batch_sizes:
        tool = summarize(pooled[(f"{TOOL_PREFIX}{best[b]}", b)])
        lines += [f"## Batch {b}: tool's best = `{best[b]}` (p50 {tool['p50']:.1f} ms)", "",
                  "| method, done by hand | p50 (ms) | IQR (ms) | samples | tool's best is faster by |",
                  "|---|---:|---:|---:|---:|"]
        ratios = []
        for name in args.methods:
            s = summarize(pooled[(name, b)])
            ratio = s["p50"] / tool["p50"]
            ratios.append(ratio)
            lines.append(f"| {methods[name][0]} | {s['p50']:.1f} | {s['p25']:.1f}–{s['p75']:.1f} | {s['n']} | "
                         f"{ratio:.2f}× |")
        lines.append(f"| **infertune `{best[b]}`** | **{tool['p50']:.1f}** | {tool['p25']:.1f}–{tool['p75']:.1f} "
                     f"| {tool['n']} | — |")
        lines += ["", f"Against the best hand-tuned method: **{min(ratios):.2f}×** "
                  f"(target ≥ 1.10×), against eager: {ratios[args.methods.index('eager')]:.2f}×."
                  if "eager" in args.methods else f"Against the best hand-tuned method: **{min(ratios):.2f}×**.", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
