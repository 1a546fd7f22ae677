#!/usr/bin/env python
"""The seed's entry point, kept working: ``python benchmark_all.py [--batch-size 1 4 8] [--config my_config.yaml]``.

A thin shim over ``infertune run``; it reads ./config.yaml by default, as the seed did.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from infertune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
