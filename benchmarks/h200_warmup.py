"""How a GPU's clock and a CUDA graph's latency ramp up after idling (is the timer's 0.5 s warm-up enough?).

ResNet50 fp16 channels_last, random weights, replayed from one CUDA graph per batch size. After each idle
period (the GPU left alone for that long) the graph is replayed for 1.5 s; every 25 ms window prints the SM
clock NVML reports at its end and the median CUDA-event latency of the window's replays. Usage (CUDA
machine, nvidia-ml-py installed): python benchmarks/h200_warmup.py [batch ...]  (default: 1 256)
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import pynvml
import torch
import torchvision

WINDOW_S = 0.025
REPLAY_S = 1.5
IDLE_S = (5.0, 0.05, 0.5, 2.0)


def graph_of(batch: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    model = torchvision.models.resnet50().eval().cuda().half().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = True
    with torch.inference_mode():
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
    return graph, x


def replay_windows(graph: torch.cuda.CUDAGraph, nvml: object) -> list[tuple[float, int, float]]:
    """(seconds since the first replay, SM clock MHz at the window's end, median latency ms) per window."""
    start, rows = time.perf_counter(), []
    while time.perf_counter() - start < REPLAY_S:
        window_end, times = time.perf_counter() + WINDOW_S, []
        while time.perf_counter() < window_end:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            graph.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        clock = pynvml.nvmlDeviceGetClockInfo(nvml, pynvml.NVML_CLOCK_SM)
        rows.append((time.perf_counter() - start, clock, statistics.median(times)))
    return rows


def main(batches: list[int]) -> None:
    pynvml.nvmlInit()
    nvml = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    max_clock = pynvml.nvmlDeviceGetMaxClockInfo(nvml, pynvml.NVML_CLOCK_SM)
    print(f"{torch.cuda.get_device_name()}: max SM clock {max_clock} MHz")
    for batch in batches:
        graph, _ = graph_of(batch)
        for idle in IDLE_S:
            time.sleep(idle)
            idle_clock = pynvml.nvmlDeviceGetClockInfo(nvml, pynvml.NVML_CLOCK_SM)
            rows = replay_windows(graph, nvml)
            steady = statistics.median(ms for t, _, ms in rows if t > REPLAY_S - 0.5)
            within = next((t for t, _, ms in rows if ms <= steady * 1.01), float("nan"))
            print(json.dumps({"batch": batch, "idle_s": idle, "clock_before_mhz": idle_clock, "steady_ms": steady,
                              "first_window_within_1pct_s": round(within, 3),
                              "windows": [(round(t, 3), c, round(ms, 4)) for t, c, ms in rows]}))
            print(f"batch {batch}, after {idle:4.2f} s idle (clock {idle_clock} MHz): steady {steady:.4f} ms; "
                  f"within 1% of it from {within:.3f} s; first windows (s, MHz, ms): "
                  + ", ".join(f"({t:.3f}, {c}, {ms:.4f})" for t, c, ms in rows[:8]))


if __name__ == "__main__":
    main([int(b) for b in sys.argv[1:]] or [1, 256])
