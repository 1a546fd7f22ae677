"""Batch norms folded before torch.compile (the default) against folded by freezing (``noprefold``), in ONE process.

Not part of the tool: the side-by-side check behind the ``noprefold`` option (docs/results/h200.md). Tool runs
compare the two in separate worker processes, where each process's cuDNN autotuning may pick other
convolution algorithms; here both compiled models share one process (and so one choice per convolution
shape), each replayed from its own CUDA graph in interleaved rounds. Prints the compile time of each and the
per-round medians of CUDA-event time.

Usage (GPU machine): python3 benchmarks/h200_prefold.py [batch ...]   (default: 1 256)
"""

from __future__ import annotations

import statistics
import sys
import time


def main(batches: list[int]) -> None:
    import numpy as np
    import torch
    import torchvision

    from infertune.backends.cudnn_fusion import fold_batch_norms
    from infertune.backends.torch_common import TorchRunner
    from infertune.measure.timer import TimingPolicy, measure

    torch.backends.cudnn.benchmark = True
    torch._inductor.config.freezing = True
    base = torchvision.models.resnet50().eval()
    sources = {"prefold": fold_batch_norms(base)[0], "noprefold": base}
    compiled = {name: torch.compile(m.cuda().half().to(memory_format=torch.channels_last), backend="inductor",
                                    options={"freezing": True}, dynamic=False) for name, m in sources.items()}
    for batch in batches:
        host = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        runners, outputs = {}, {}
        for name, fn in compiled.items():
            t0 = time.perf_counter()
            runner = TorchRunner(fn, "cuda", torch.half, channels_last=True)
            runner.capture_cuda_graph(runner.to_native(host))  # the tool's capture: warm-up (compiles), then the graph
            outputs[name] = runner.to_numpy(runner(runner.to_native(host)))
            runners[name] = runner
            print(f"batch {batch} {name}: compiled and captured in {time.perf_counter() - t0:.1f} s", flush=True)
        print(f"batch {batch}: max |prefold - noprefold| {float(np.abs(outputs['prefold'] - outputs['noprefold']).max()):.4f}")
        policy = TimingPolicy(warmup_iterations=10, min_iterations=max(20, 4000 // batch), min_time_s=0.0)
        medians: dict[str, list[float]] = {name: [] for name in runners}
        for rnd in range(8):
            for name in runners if rnd % 2 == 0 else reversed(list(runners)):  # the tool's timed loop, CUDA events
                runner = runners[name]
                medians[name].append(statistics.median(measure(runner, runner.to_native(host), policy).samples_ms))
        pre, no = statistics.median(medians["prefold"]), statistics.median(medians["noprefold"])
        print(f"batch {batch}: p50 prefold {pre:.4f} ms, noprefold {no:.4f} ms, prefold/noprefold {pre / no:.4f}; "
              f"round medians prefold {[round(v, 4) for v in medians['prefold']]} "
              f"noprefold {[round(v, 4) for v in medians['noprefold']]}", flush=True)


if __name__ == "__main__":
    main([int(b) for b in sys.argv[1:]] or [1, 256])
