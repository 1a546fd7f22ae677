"""Interleaved rounds, the way MEASUREMENT.md found works on a VM that is noisy in phases: build every
method once (untimed, so rounds only load), then visit every (method, batch) in a shuffled order per
round, each visit in its own fresh process, and pool the samples per cell. Shared by the benchmarks
that compare the tool with hand-tuned methods (cpu_ladder.py, transformers.py)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

Cell = tuple[str, int]


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
