"""Where the time goes in the cuDNN-fused ResNet50 (fp16, channels_last, one CUDA graph): kernels by total time.

Not part of the tool: the profile behind docs/results/h200.md's "fused epilogues" section.
Usage (device machine): python3 benchmarks/h200_fused_profile.py [batch]
"""

from __future__ import annotations

import sys
from collections import defaultdict

import torch
import torchvision

from infertune.backends.cudnn_fusion import fuse_for_cudnn
from infertune.backends.torch_common import CudaGraphCall


def main(batch: int) -> None:
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    fused, counts = fuse_for_cudnn(model, torch.randn(1, 3, 224, 224))
    print(counts.describe())
    fused = fused.cuda().half().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.half).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        graph = CudaGraphCall(fused, x)
        for _ in range(10):
            graph(x)
        torch.cuda.synchronize()
        iters = 5
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(iters):
                graph(x)
            torch.cuda.synchronize()
    per_kernel: dict[str, list[float]] = defaultdict(list)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[ev.name].append(ev.device_time_total / 1e3)
    total = sum(sum(v) for v in per_kernel.values()) / iters
    print(f"batch {batch}: {total:.3f} ms of kernels per call ({batch / total * 1e3:,.0f} img/s if back to back)")
    for name, times in sorted(per_kernel.items(), key=lambda kv: -sum(kv[1]))[:15]:
        print(f"{sum(times) / iters:8.3f} ms  {len(times) // iters:4d}x  {name[:110]}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
