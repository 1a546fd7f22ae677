"""Child process of the ``aoti`` backend: compile a saved ExportedProgram into an AOTInductor package.

Run as ``python -m infertune.backends.aoti_build --exported EP.pt2 --package OUT.pt2 --meta OUT.json
--configs JSON --threads N``. It loads the program with ``torch.export.load``, compiles it with
``torch._inductor.aoti_compile_and_package``, then loads the package and runs it once on the
program's example inputs, and writes a small JSON (its pid, the compile seconds, the torch version)
next to the package. Any failure ends the process with a non-zero status and a traceback on stderr,
which the parent puts into its error message.

Why the trial run here: loading a package is native code, and it can crash the process outright
(seen: ``aoti_load_package`` of a CUDA package segfaulted under torch 2.11 on the H200 machines,
even in the process that compiled it). Crashing this child turns that into an error row; crashing
the measuring process would lose the cell and possibly the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

#: printed on stderr once the package is compiled, before the trial load (the parent looks for it).
COMPILED_MARKER = "aoti_build: package compiled; loading it for a trial run"


def build(exported: Path, package: Path, configs: dict[str, Any], threads: int) -> dict[str, Any]:
    """Compile ``exported`` into ``package``; return what the parent records in the cache manifest."""
    import torch

    # Inductor's CPU kernels bake the OpenMP thread count in at code generation: compile with the
    # thread count the package will run with (it is part of the parent's cache key too).
    torch.set_num_threads(threads)
    program = torch.export.load(str(exported))
    start = time.perf_counter()
    with torch.no_grad():
        torch._inductor.aoti_compile_and_package(program, package_path=str(package), inductor_configs=configs)
    compile_s = time.perf_counter() - start
    print(COMPILED_MARKER, file=sys.stderr, flush=True)  # a crash from here on is the loader's, not the compiler's
    start = time.perf_counter()
    _trial_run(package, program)
    return {
        "builder_pid": os.getpid(),
        "compile_s": round(compile_s, 3),
        "trial_run_s": round(time.perf_counter() - start, 3),
        "torch": torch.__version__,
        "threads": threads,
        "inductor_configs": configs,
    }


def _trial_run(package: Path, program: Any) -> None:
    """Load the package and run it once on the exported example inputs (see the module docstring)."""
    import torch

    loaded = torch._inductor.aoti_load_package(str(package))
    args, kwargs = program.example_inputs or ((), {})
    with torch.no_grad():
        loaded(*args, **(kwargs or {}))
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exported", type=Path, required=True)
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--meta", type=Path, required=True)
    parser.add_argument("--configs", default="{}", help="Inductor config as JSON")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    meta = build(args.exported, args.package, json.loads(args.configs), args.threads)
    args.meta.write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
