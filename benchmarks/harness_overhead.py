"""How much the harness itself adds per timed iteration, as ratios measured side by side in one run.

    python benchmarks/harness_overhead.py

Times, interleaved over several rounds: a bare ``perf_counter_ns`` loop around a no-op call, the
project's timer (``measure``) around the null runner, and the same timer around eager PyTorch on the
tiny model. Prints the per-iteration cost of each and the harness overhead as a fraction of a real
(tiny-model) inference, so a change that makes the timer heavier shows up as a ratio, not a guess.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infertune.backends.null import NullRunner
from infertune.measure.timer import TimingPolicy, measure

ROUNDS = 5
POLICY = TimingPolicy(warmup_iterations=100, min_iterations=2000, min_time_s=0.2)


def bare_loop(n: int) -> float:
    """ns per iteration of the simplest possible timed loop around a no-op call."""
    f = (lambda x: x)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        f(None)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples)


def harness(runner, inputs) -> float:
    timing = measure(runner, inputs, POLICY)
    return statistics.median(timing.samples_ns)


def main() -> None:
    import torch

    from infertune.backends.torch_common import TorchRunner
    from infertune.testing import tiny_convnet

    torch.set_num_threads(1)
    tiny = TorchRunner(tiny_convnet(), "cpu", torch.float32)
    x = tiny.to_native(torch.randn(1, 3, 32, 32).numpy())
    results: dict[str, list[float]] = {"bare loop": [], "timer + null runner": [], "timer + tiny eager model": []}
    for _ in range(ROUNDS):
        results["bare loop"].append(bare_loop(POLICY.min_iterations))
        results["timer + null runner"].append(harness(NullRunner(), x))
        results["timer + tiny eager model"].append(harness(tiny, x))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{'what is timed':<28} {'ns/iteration (median of rounds)':>32}")
    for k, v in med.items():
        print(f"{k:<28} {v:>32,.0f}")
    overhead = med["timer + null runner"] - med["bare loop"]
    print(f"\nharness overhead over a bare loop: {overhead:,.0f} ns/iteration "
          f"({med['timer + null runner'] / med['bare loop']:.2f}x the bare loop)")
    print(f"harness cost / tiny-model inference: {med['timer + null runner'] / med['timer + tiny eager model']:.4f} "
          f"(ResNet50 inferences are ~1000x longer than the tiny model's)")


if __name__ == "__main__":
    main()
