"""Does the Ray executor scale across GPUs without changing the numbers? One GPU vs two, side by side.

    python benchmarks/ray_scaling.py                      # the GPU ladder below, batch 1 and 8
    python benchmarks/ray_scaling.py --gpus 1 2 --batch-size 1 --variants pytorch:fp32 pytorch:fp16:channels_last
    python benchmarks/ray_scaling.py --device cpu --gpus 0 0 --variants null:fp32 pytorch:fp32   # a dry run, no GPU

Runs the same ladder twice through ``benchmark.isolation: ray`` on a local Ray instance, first limited to
``--gpus[0]`` GPUs, then to ``--gpus[1]``, each with an empty artifact cache of its own (so both compile
everything: a warm cache would flatter the second run). Prints the wall time of each, their ratio (the
issue's target: two GPUs at least 1.7x faster than one), and per cell the p50 of both runs with the
change and ``infertune compare``'s verdict on it (a real change, or within run-to-run drift).
Result files stay under ``--out`` for ``infertune report`` / ``compare``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

#: the CUDA ladder without its multi-minute compiles (max-autotune, AOTInductor), so two runs fit in minutes.
GPU_LADDER = ["pytorch:fp32", "pytorch:tf32", "pytorch:fp16:channels_last", "pytorch:bf16:channels_last",
              "pytorch:fp16:channels_last:cuda_graph", "torchscript:fp16", "torch_compile:fp16:channels_last"]


def one_run(gpus: int, args: argparse.Namespace, out: Path) -> tuple[float, Path]:
    from infertune.config import validate_config
    from infertune.pipeline import run

    cfg = validate_config({
        "model": {"name": args.model, "pretrained": False},
        "benchmark": {"batch_sizes": args.batch_size, "device": args.device, "isolation": "ray",
                      "min_time_s": args.min_time},
        "optimization": {"variants": args.variants},
        "output": {"dir": str(out / f"gpus{gpus}"), "models_dir": str(out / f"models_gpus{gpus}")},
        "ray": {"num_gpus": gpus},
    })
    start = time.perf_counter()
    result = run(cfg, log=lambda m: print(f"  {m}"))
    return time.perf_counter() - start, result.json_path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, nargs=2, default=[1, 2], metavar=("FEW", "MANY"))
    p.add_argument("--variants", nargs="+", default=GPU_LADDER)
    p.add_argument("--batch-size", type=int, nargs="+", default=[1, 8])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--min-time", type=float, default=1.0, help="minimum timed seconds per cell")
    p.add_argument("--out", default="benchmarks/.out/ray_scaling")
    args = p.parse_args()

    from infertune.report.compare import compare_runs, fmt_change, fmt_p

    out = Path(args.out)
    walls, files = [], []
    for gpus in args.gpus:
        print(f"run with {gpus} GPU(s): {len(args.variants)} variants x batch {args.batch_size}", flush=True)
        wall, path = one_run(gpus, args, out)
        print(f"  wall time {wall:.1f} s -> {path}", flush=True)
        walls.append(wall)
        files.append(path)

    few, many = args.gpus
    print(f"\nwall time: {walls[0]:.1f} s with {few} GPU(s), {walls[1]:.1f} s with {many}: "
          f"{walls[0] / walls[1]:.2f}x faster (target >= 1.7x for 1 -> 2)")
    comparison = compare_runs(files[0], files[1])
    print(f"\n{'cell':<44} {f'p50 ms ({few})':>12} {f'p50 ms ({many})':>12} {'change':>8} {'p (adj.)':>9}  verdict")
    for cell in comparison.cells:
        p50 = [f"{r.latency_p50_ms:.3f}" if r is not None and r.latency_p50_ms else "-"
               for r in (cell.baseline, cell.candidate)]
        print(f"{cell.variant + ' b' + str(cell.batch_size):<44} {p50[0]:>12} {p50[1]:>12} {fmt_change(cell.p50_change):>8} "
              f"{fmt_p(cell.p_value):>9}  {cell.verdict()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
