"""One torch.compile for every batch size, or one per batch size? (issue 17: "compile once per variant")

ResNet50 fp16 channels_last, Inductor with freezing, each batch size replayed from its own CUDA graph (as
``torch_compile:fp16:channels_last:cuda_graph`` does). Two copies of the model are compiled in this process:

- static: dynamo specialises every batch size, so batch 1, 4 and 8 compile three graphs;
- dynamic: the batch dimension is marked dynamic (``torch._dynamo.mark_dynamic``) from the first batch size
  above 1, so batch 4 and 8 share one graph (batch 1 is always specialised by dynamo, a second graph).

Prints the compile seconds per batch size and the number of graphs of each, then the replay latency (CUDA
events, median over interleaved rounds of static and dynamic) and the ratio dynamic / static per batch size.

    python benchmarks/h200_dynamic_batch.py [--batches 1 4 8 32] [--rounds 5] [--replays 200]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replays", type=int, default=200)
    args = parser.parse_args()
    import os

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))
    import torch
    import torchvision
    from torch._dynamo.utils import counters

    torch.backends.cudnn.benchmark = True
    base = torchvision.models.resnet50().eval().cuda().half().to(memory_format=torch.channels_last)
    graphs: dict[str, dict[int, torch.cuda.CUDAGraph]] = {}
    outputs: dict[str, dict[int, torch.Tensor]] = {}
    inputs: dict[int, torch.Tensor] = {}
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    for mode in ("static", "dynamic"):
        compiled = torch.compile(copy.deepcopy(base), backend="inductor", options={"freezing": True}, dynamic=False)
        before = counters["stats"]["unique_graphs"]
        graphs[mode], outputs[mode] = {}, {}
        for batch in args.batches:
            with torch.inference_mode():
                x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.half).to(
                    memory_format=torch.channels_last)
                if mode == "dynamic" and batch > 1:
                    torch._dynamo.mark_dynamic(x, 0)
                inputs.setdefault(batch, x)
                start = time.perf_counter()
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream), torch._inductor.config.patch(freezing=True):
                    for _ in range(3):
                        compiled(x)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph), torch._inductor.config.patch(freezing=True):
                    out = compiled(x)
                torch.cuda.synchronize()
            graphs[mode][batch], outputs[mode][batch] = graph, out
            inputs[batch] = x
            print(f"{mode:8s} batch {batch:4d}: compiled and captured in {time.perf_counter() - start:6.1f} s "
                  f"(graphs so far: {counters['stats']['unique_graphs'] - before})", flush=True)
    for batch in args.batches:
        same = torch.allclose(outputs["static"][batch].float(), outputs["dynamic"][batch].float(), rtol=1e-2, atol=1e-2)
        print(f"batch {batch}: static and dynamic outputs agree: {same}", flush=True)
    samples: dict[tuple[str, int], list[float]] = {}
    start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    warm_until = time.perf_counter() + 1.0
    while time.perf_counter() < warm_until:  # clocks up
        graphs["static"][args.batches[-1]].replay()
    for _ in range(args.rounds):
        for batch in args.batches:
            for mode in ("static", "dynamic"):
                for _ in range(args.replays):
                    start_ev.record()
                    graphs[mode][batch].replay()
                    end_ev.record()
                    end_ev.synchronize()
                    samples.setdefault((mode, batch), []).append(start_ev.elapsed_time(end_ev))
    print(f"{'batch':>5s} {'static p50 ms':>14s} {'dynamic p50 ms':>15s} {'dynamic/static':>15s}")
    for batch in args.batches:
        s, d = statistics.median(samples[("static", batch)]), statistics.median(samples[("dynamic", batch)])
        print(f"{batch:5d} {s:14.4f} {d:15.4f} {d / s:15.3f}", flush=True)


if __name__ == "__main__":
    main()
