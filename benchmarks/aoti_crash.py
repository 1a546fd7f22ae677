"""Why an AOTInductor CUDA package crashes when loaded (torch 2.11 on the H200 image): build, then load in stages.

Not part of the tool: the diagnosis behind the ``aoti`` row on CUDA (docs/results/h200.md).
``build DIR [fp16|fp32] [KEY=VALUE ...]`` compiles the tiny test model into DIR/model.pt2 in this process and
never loads it (Inductor config as KEY=VALUE, JSON values); ``load PKG`` loads and runs it, printing each stage
first, so a crash's last line says where; ``inspect PKG`` lists the package and what its shared library links.
Usage (device machine): see benchmarks/h200_fused.sh, which runs the stages under cuda-gdb for a native backtrace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import torch


def stage(msg: str) -> None:
    print(f"[aoti_crash {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build(out: Path, precision: str, configs: dict[str, object]) -> None:
    from infertune.testing import tiny_convnet

    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = tiny_convnet().cuda().to(dtype)
    x = torch.randn(2, 3, 32, 32, device="cuda", dtype=dtype)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.export.export(model, (x,))
        stage(f"compiling ({precision}, {configs})")
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(out / "model.pt2"),
                                                        inductor_configs=configs)
    stage(f"built {path}")


def load(package: Path) -> None:
    stage("cuda init")
    x = torch.randn(2, 3, 32, 32, device="cuda")
    stage("aoti_load_package")
    loaded = torch._inductor.aoti_load_package(str(package))
    stage(f"loaded: {type(loaded).__name__}")
    meta = loaded.get_metadata() if hasattr(loaded, "get_metadata") else {}
    stage(f"metadata {meta}")
    dtype = torch.float16 if "half" in str(meta).lower() else torch.float32
    stage("run")
    with torch.no_grad():
        y = loaded(x.to(dtype))
    torch.cuda.synchronize()
    stage(f"ran: output {tuple(y.shape)} finite={bool(torch.isfinite(y).all())}")


def inspect(package: Path) -> None:
    with zipfile.ZipFile(package) as zf:
        for info in zf.infolist():
            print(f"{info.file_size:>12}  {info.filename}")
        libs = [n for n in zf.namelist() if n.endswith(".so")]
        target = Path("/tmp/aoti_inspect")
        zf.extractall(target)
    for lib in libs:
        so = target / lib
        print(f"--- ldd {lib}")
        print(subprocess.run(["ldd", str(so)], capture_output=True, text=True, check=False).stdout)
        print(subprocess.run(["sh", "-c", f"nm -D --undefined-only {so} | grep -i -E 'cu[A-Z]|cuda' | head -20"],
                             capture_output=True, text=True, check=False).stdout)


def main(argv: list[str]) -> None:
    cmd, path = argv[0], Path(argv[1])
    if cmd == "build":
        precision = argv[2] if len(argv) > 2 else "fp16"
        configs = {k: json.loads(v) for k, v in (a.split("=", 1) for a in argv[3:])}
        build(path, precision, configs)
    elif cmd == "load":
        load(path)
    elif cmd == "inspect":
        inspect(path)
    else:
        raise SystemExit(f"unknown command {cmd!r}: build, load or inspect")


if __name__ == "__main__":
    main(sys.argv[1:])
