#!/usr/bin/env python
"""The seed's chart generator, kept working: ``python visualize_results.py --input results/benchmark_results_<TS>.csv``.

A thin shim over ``infertune report``: charts, an HTML page and a markdown table beside the CSV.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from infertune.cli import main  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", "-i", required=True, nargs="+",
                        help="results CSV (or JSON) written by benchmark_all.py; several files merge into one report")
    parser.add_argument("--output", "-o", help="folder for charts and the HTML page")
    args = parser.parse_args()
    sys.exit(main(["report", *args.input, *(["--out", args.output] if args.output else [])]))
