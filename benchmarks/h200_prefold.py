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
    import torch
    import torchvision

    from infertune.backends.cudnn_fusion import fold_batch_norms
    from infertune.backends.torch_common import CudaGraphCall

    torch.backends.cudnn.benchmark = True
    torch._inductor.config.freezing = True
    base = torchvision.models.resnet50().eval()
    sources = {"prefold": fold_batch_norms(base)[0], "noprefold": base}
    compiled = {name: torch.compile(m.cuda().half().to(memory_format=torch.channels_last), backend="inductor",
                                    options={"freezing": True}, dynamic=False) for name, m in sources.items()}
    with torch.inference_mode():
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
            graphs = {}
            for name, fn in compiled.items():
                t0 = time.perf_counter()
                call = CudaGraphCall(fn, x)  # the tool's capture: warm-up (compiles) on a side stream, then the graph
                torch.cuda.synchronize()
                graphs[name] = (call.graph, call.static_output)
                print(f"batch {batch} {name}: compiled and captured in {time.perf_counter() - t0:.1f} s", flush=True)
            a, b = graphs["prefold"][1].float(), graphs["noprefold"][1].float()
            print(f"batch {batch}: max |prefold - noprefold| {float((a - b).abs().max()):.4f}")
            calls = max(20, 4000 // batch)
            medians: dict[str, list[float]] = {name: [] for name in graphs}
            for rnd in range(8):
                order = list(graphs) if rnd % 2 == 0 else list(reversed(graphs))
                for name in order:
                    graph = graphs[name][0]
                    for _ in range(10):
                        graph.replay()
                    times = []
                    for _ in range(calls):
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        graph.replay()
                        end.record()
                        end.synchronize()
                        times.append(start.elapsed_time(end))
                    medians[name].append(statistics.median(times))
            pre, no = statistics.median(medians["prefold"]), statistics.median(medians["noprefold"])
            print(f"batch {batch}: p50 prefold {pre:.4f} ms, noprefold {no:.4f} ms, prefold/noprefold {pre / no:.4f}; "
                  f"round medians prefold {[round(v, 4) for v in medians['prefold']]} "
                  f"noprefold {[round(v, 4) for v in medians['noprefold']]}", flush=True)


if __name__ == "__main__":
    main([int(b) for b in sys.argv[1:]] or [1, 256])
