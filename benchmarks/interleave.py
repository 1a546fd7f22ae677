"""Interleaved rounds, the way MEASUREMENT.md found works on a VM that is noisy in phases: build every
method once (untimed, so rounds only load), then visit every (method, batch) in a shuffled order per
round, each visit in its own fresh process, and pool the samples per cell. Shared by the benchmarks
that compare the tool with hand-tuned methods (cpu_ladder.py, transformers.py)."""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable

Cell = tuple[str, int]


def add_round_options(p: argparse.ArgumentParser) -> None:
    """The options every side-by-side benchmark takes: its child's, the batch sizes, rounds, timing, outputs."""
    p.add_argument("--child")
    p.add_argument("--batch", type=int)
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="default: every core this process may use")
    p.add_argument("--tool-results", help="use this results CSV instead of running the tool")
    p.add_argument("--write-doc", help="write the markdown tables to this file")
    p.add_argument("--json-out", help="write all pooled samples to this JSON file")


def parse_round_args(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, filling ``--threads`` with the usable cores when it was not given."""
    args = p.parse_args()
    if args.threads is None:
        from infertune.env import usable_cores

        args.threads = usable_cores()
    return args


def summarize(samples: list[float]) -> dict[str, float]:
    """Median, quartiles and count of one cell's pooled samples (ms)."""
    qs = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return {"p50": statistics.median(samples), "p25": qs[0], "p75": qs[2], "n": len(samples)}


def interleaved_rounds(cells: list[Cell], rounds: int, build: Callable[[str], object],
                       measure: Callable[[str, int], list[float]], width: int = 32) -> dict[Cell, list[float]]:
    """``build(method)`` once per method, then ``rounds`` shuffled visits of ``measure(method, batch)``;
    returns each cell's pooled samples (ms)."""
    for method in dict.fromkeys(m for m, _ in cells):
        print(f"build {method}", flush=True)
        build(method)
    pooled: dict[Cell, list[float]] = {c: [] for c in cells}
    rng = random.Random(0)
    for r in range(rounds):
        order = cells[:]
        rng.shuffle(order)
        for method, batch in order:
            samples = measure(method, batch)
            pooled[(method, batch)].extend(samples)
            print(f"round {r + 1}/{rounds} {method:<{width}} b{batch:<3} p50 {statistics.median(samples):9.2f} ms",
                  flush=True)
    return pooled
