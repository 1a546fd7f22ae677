"""Device latency timed alone against timed inside the end-to-end loop, in ONE process (issue 17).

Not part of the tool: the check behind ``measure.timer.measure``'s one loop per GPU cell (docs/results/h200.md).
A GPU cell used to time its calls twice, first on a device-resident input (the device figure), then host to
host (the end-to-end figure); now each call of one loop takes a fresh copy of the host batch and sends its
outputs back, and the CUDA events around the call alone give the device figure. Does the device figure move
when copies run between the calls? Each runner below (ResNet50 fp16 channels_last, the tool's ``TorchRunner``,
in a CUDA graph and eager) is timed both ways in interleaved rounds; prints the per-round medians and the ratio.

Usage (GPU machine): python3 benchmarks/h200_one_loop.py [batch ...]   (default: 1 8 256)
"""

from __future__ import annotations

import statistics
import sys


def main(batches: list[int]) -> None:
    import numpy as np
    import torch
    import torchvision

    from infertune.backends.torch_common import TorchRunner
    from infertune.measure.timer import TimingPolicy, measure

    torch.backends.cudnn.benchmark = True
    model = torchvision.models.resnet50().eval().cuda().half().to(memory_format=torch.channels_last)
    for batch in batches:
        host = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        runners = {"cuda_graph": TorchRunner(model, "cuda", torch.half, channels_last=True)}
        runners["cuda_graph"].capture_cuda_graph(runners["cuda_graph"].to_native(host))
        if batch == 1:
            runners["eager"] = TorchRunner(model, "cuda", torch.half, channels_last=True)
        for kind, runner in runners.items():
            policy = TimingPolicy(warmup_iterations=10, min_iterations=max(20, 200 // batch), min_time_s=0.0)
            native = runner.to_native(host)
            alone: list[float] = []
            in_loop: list[float] = []
            e2e: list[float] = []
            for rnd in range(8):
                for way in ("alone", "in_loop") if rnd % 2 == 0 else ("in_loop", "alone"):
                    if way == "alone":
                        alone.append(statistics.median(measure(runner, native, policy).samples_ms))
                    else:
                        timing = measure(runner, native, policy, host_batch=host)
                        in_loop.append(statistics.median(timing.samples_ms))
                        e2e.append(statistics.median(timing.e2e_samples_ms))
            a, b = statistics.median(alone), statistics.median(in_loop)
            print(f"batch {batch} {kind}: device p50 alone {a:.4f} ms, in the end-to-end loop {b:.4f} ms, "
                  f"ratio {b / a:.4f}; end to end {statistics.median(e2e):.4f} ms; rounds alone "
                  f"{[round(v, 4) for v in alone]} in loop {[round(v, 4) for v in in_loop]}", flush=True)


if __name__ == "__main__":
    main([int(b) for b in sys.argv[1:]] or [1, 8, 256])
