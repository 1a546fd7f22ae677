"""Where a warm torch.compile of ResNet50 (fp16, channels_last, freezing) spends its time on a GPU.

Not part of the tool: the profile behind issue 17's "faster answer" (docs/results/h200.md). Run it twice with
the same cache folder: the first run fills Inductor's caches (cold), the second finds them (warm) and, with
``--profile``, prints cProfile's top functions for the process's first compile (batch 1, one-off costs
included) and its second (batch 4: what each further compile costs). ``--prefold`` folds the batch norms into
the convolutions in FP32 first (``torch.fx.experimental.optimization.fuse``), so freezing has less to fold.

Usage (device machine): python3 benchmarks/h200_warm_compile.py CACHE_DIR [--prefold] [--profile]
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
import time


def main(argv: list[str]) -> None:
    cache, prefold, profile = argv[0], "--prefold" in argv, "--profile" in argv
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    os.environ["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
    import torch
    import torchvision
    from torch.fx.experimental.optimization import fuse

    torch._inductor.config.freezing = True
    model = torchvision.models.resnet50().eval()
    if prefold:
        model = fuse(model)
    model = model.cuda().half().to(memory_format=torch.channels_last)
    compiled = torch.compile(model, backend="inductor", options={"freezing": True}, dynamic=False)
    for batch in (1, 4):
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        with torch.inference_mode():
            compiled(x)
        torch.cuda.synchronize()
        if prof:
            prof.disable()
        print(f"{'prefold' if prefold else 'plain'} batch {batch}: first call (compile) {time.perf_counter() - t0:.2f} s",
              flush=True)
        if prof:
            for key, n in (("cumulative", 45), ("tottime", 25)):
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats(key).print_stats(n)
                print("\n".join(line[:200] for line in out.getvalue().splitlines()[6:]))


if __name__ == "__main__":
    main(sys.argv[1:])
