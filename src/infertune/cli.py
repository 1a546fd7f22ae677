"""The ``infertune`` command: argument parsing and printing; the work lives in pipeline, report and env.

    infertune run [--config config.yaml] [--batch-size 1 4 8] [--variants ...] [--device cpu] ...
    infertune verify [same options] [--dataset labelled_folder/]   (fidelity/accuracy only, no timing)
    infertune report results/benchmark_results_<TS>.csv
    infertune backends | env | compare BASELINE CANDIDATE [--fail-on-regression PCT]
    infertune scenario {single-stream,multi-stream,server,offline,all} [--latency-bound-ms 100] ...
    infertune export results/benchmark_results_<TS>.json --to best/   (also: infertune run ... --export best/)

A user-fixable problem (bad config, unknown model, missing file) prints one clear message and exits
with status 2; it never shows a traceback.

Exit codes: 0 the run finished (every cell has a row; failed, crashed or timed-out variants are rows,
not errors); 2 bad input or an unusable environment, found before any long work (one ``error:`` line);
130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM: the files hold every finished row, the cell in
progress is marked ``interrupted``, and ``infertune run --resume RUN`` finishes the run;
3 the run could not go on: the FP32 reference (the user's model itself, in its worker) crashed, hung or
ran out of memory; one ``error:`` line names the stage and the cause, every planned cell has a row
saying so, and ``--resume`` runs them once the model is fixed;
1 an unexpected internal error (a bug: please report the traceback).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from infertune.errors import ConfigError, InfertuneError, RunFailed

DEFAULT_CONFIG = "config.yaml"


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help=f"YAML config (default: ./{DEFAULT_CONFIG} if present, else built-in defaults)")
    p.add_argument("--batch-size", "--batch-sizes", dest="batch_sizes", type=_int_arg("batch size"), nargs="+",
                   metavar="N", help="batch sizes to benchmark, e.g. 1 4 8 (overrides benchmark.batch_sizes)")
    p.add_argument("--variants", nargs="+", metavar="V",
                   help="explicit ladder, e.g. pytorch:fp32 onnxruntime:int8 openvino:int8")
    p.add_argument("--model", "-m", help="torchvision/timm name, package.module:factory, path/to/model.onnx or "
                                          "hf:<name or folder> (overrides model.name)")
    p.add_argument("--weights", help="local state_dict file (overrides model.weights)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="download library weights when online (offline: random weights, noted in results)")
    p.add_argument("--input-shape", type=_int_arg("dimension"), nargs="+", metavar="N",
                   help="one input's shape, batch first: 1 3 224 224 for images, 1 64 for 64 features")
    p.add_argument("--sequence-length", type=_int_arg("sequence length"), metavar="S",
                   help="tokens per sample of a text model such as hf:bert-base-uncased (default 128)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=_int_arg("thread count"), help="intra-op threads for every runtime")
    p.add_argument("--warmup", type=_int_arg("warmup count", minimum=0), help="warmup iterations per cell")
    p.add_argument("--iterations", type=_int_arg("iteration count"), help="minimum timed iterations per cell")
    p.add_argument("--min-time", type=float, metavar="S", help="minimum timed seconds per cell")
    p.add_argument("--precision", type=float, metavar="PCT", dest="precision_pct",
                   help="end a cell's timing sooner once its median is known within +-PCT%% "
                        "(default 0.5 on a GPU, off on the CPU; 0: always time --min-time)")
    p.add_argument("--concurrent-jobs", type=_int_arg("job count"), metavar="N",
                   help="jobs prepared side by side, each measured alone (default on a GPU: as many as the machine "
                        "holds, 3 per core and one per 2 GB of host and of GPU memory; on the CPU 1)")
    p.add_argument("--job-per-cell", action=argparse.BooleanOptionalAction, default=None,
                   help="a worker per cell (variant and batch size) rather than per variant (default: when several "
                        "jobs run at once)")
    p.add_argument("--rounds", type=_int_arg("round count"),
                   help="measure the whole ladder this many times, interleaved, pooling samples per cell")
    p.add_argument("--output-dir", "-o", help="where result files go (default results/)")
    p.add_argument("--isolation", "--executor", dest="isolation", choices=["process", "none", "ray"],
                   help="where jobs run: a worker process each (process, the default), here (none), a Ray cluster (ray)")
    p.add_argument("--ray-address", metavar="ADDR", help="with --executor ray: a running cluster (default: a local instance)")
    p.add_argument("--per-node", action="store_const", const=True, default=None,
                   help="with --executor ray: run the whole ladder on every node of the cluster, side by side")
    p.add_argument("--no-cache", action="store_true", help="rebuild converted artifacts even if cached")
    p.add_argument("--report", action="store_true", help="also write charts, HTML and markdown after the run")
    p.add_argument("--resume", metavar="RUN",
                   help="finish an interrupted run with its saved config: a file of the run "
                        "(results/benchmark_results_<TS>.csv) or its folder (the newest unfinished run there)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_verify_args(p)


def _add_verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", choices=["photos", "synthetic"],
                   help="verification inputs: shipped real photos (default) or seeded noise")
    p.add_argument("--images", help="a folder of your own images to verify on (overrides verify.images)")
    p.add_argument("--dataset", help="a labelled ImageFolder tree: accuracy mode (overrides verify.dataset)")
    p.add_argument("--calibration-images", help="a folder of INT8 calibration images (never the verification ones)")
    p.add_argument("--samples", type=_int_arg("sample count"), help="verification samples (overrides verify.samples)")


def _int_arg(what: str, minimum: int = 1) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {value}")
        return value

    return parse


#: what ``infertune --help`` opens with: what the tool does for its user.
DESCRIPTION = ("Find the fastest way to run a PyTorch model on this machine without changing its predictions: "
               "infertune converts the model to each runtime and precision it can (TorchScript, torch.compile, "
               "AOTInductor, ONNX Runtime, OpenVINO, TensorRT; FP32, FP16, BF16, INT8), checks every variant's "
               "outputs against FP32 eager, times each at every batch size, and reports the fastest that kept "
               "the predictions.")
EXAMPLES = """examples:
  infertune run                                   benchmark the default ladder (./config.yaml if present)
  infertune run --model resnet18 --batch-size 1 8 a model and batch sizes of your choice
  infertune report results/benchmark_results_TIMESTAMP.csv   charts, HTML and markdown from a run
  infertune compare A.json B.json --fail-on-regression 5     did B get slower than A?
  infertune backends                              which runtimes can run here, and why not
  infertune env                                   this machine as results record it"""


def build_parser() -> argparse.ArgumentParser:
    from infertune import __version__

    parser = argparse.ArgumentParser(prog="infertune", description=textwrap.fill(DESCRIPTION, 79), epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"infertune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_p = sub.add_parser("run", help="benchmark the ladder (the default command)")
    _add_run_args(run_p)
    run_p.add_argument("--export", metavar="DIR", help="after the run, export the fastest verified variant to DIR "
                                                       "(as `infertune export`; the largest batch size measured)")
    ver_p = sub.add_parser("verify", help="fidelity (and, with --dataset, accuracy) of every variant; no timing")
    _add_run_args(ver_p)
    rep = sub.add_parser("report", help="charts, HTML and markdown from results CSV/JSON files")
    rep.add_argument("results", nargs="+",
                     help="results/benchmark_results_<TS>.csv (or .json); several files merge into one report")
    rep.add_argument("--out", help="output folder (default: a folder named after the first file, beside it)")
    sub.add_parser("backends", help="list backends and whether they can run here").add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"])
    env_p = sub.add_parser("env", help="this machine as results record it: CPU and its ISA flags, cores, GPU, "
                                       "library versions")
    env_p.add_argument("--json", action="store_true", help="print it as JSON (what a results file holds)")
    cmp_p = sub.add_parser(
        "compare", help="p50/p99/throughput changes between runs, judged against run-to-run noise",
        usage="infertune compare BASELINE CANDIDATE [options]\n"
              "       infertune compare BASELINE_RUN... -- CANDIDATE_RUN... [options]",
        description="Compare every cell of two runs: point changes of p50, p99 and throughput, and whether the "
                    "p50 moved beyond the run-to-run noise. That noise is estimated from the rounds in the files "
                    "(--rounds 3) and from several runs per side (A1 A2 -- B1 B2); with one run of one round per "
                    "side, only changes larger than identical runs' drift can count (docs/measurement.md).",
        epilog="exit status: 0 no regression (or no --fail-on-regression), 1 regression beyond PCT, "
               "2 bad input (missing or malformed file, nothing in common)")
    cmp_p.add_argument("runs", nargs="+", metavar="RUN",
                       help="results CSV or JSON files (the JSON holds the raw samples): the baseline, then the "
                            "candidate; several runs per side separated by --")
    cmp_p.add_argument("--fail-on-regression", type=_pct_arg, metavar="PCT",
                       help="exit 1 when a cell's p50 got slower by more than PCT%% and the change is significant "
                            "(or when a cell that passed now fails)")
    cmp_p.add_argument("--alpha", type=float, default=0.01,
                       help="significance level, adjusted across cells (default 0.01: a CI gate should rarely cry wolf)")
    cmp_p.add_argument("--markdown", metavar="PATH", help="also write the comparison as markdown, e.g. for a PR")
    from infertune.scenario.command import add_parser as add_scenario_parser

    add_scenario_parser(sub, _int_arg)
    _add_export_parser(sub)
    return parser


def _add_export_parser(sub: Any) -> None:
    exp = sub.add_parser(
        "export", help="hand over the fastest verified variant: its artifact, infertune.json and a README",
        description="Copy the fastest variant that kept the predictions (at the largest batch size measured, or "
                    "--batch-size) out of the artifact cache into DIR, hash-checked, with a manifest and a README; "
                    "then load it in a fresh process and re-verify it. Load it with infertune.load(DIR).",
        epilog="exit status: 0 exported, 1 the round trip did not reproduce the verified outputs, 2 bad input "
               "(nothing exportable, a missing or changed artifact)")
    exp.add_argument("results", help="the run's results JSON (or the CSV beside it)")
    exp.add_argument("--to", required=True, metavar="DIR", help="the export folder (an earlier export there is replaced)")
    exp.add_argument("--batch-size", type=_int_arg("batch size"), metavar="N",
                     help="pick the fastest at this batch size (default: the largest measured)")
    exp.add_argument("--variant", metavar="V", help="export this variant instead of the fastest")
    exp.add_argument("--force", action="store_true",
                     help="export --variant even if it failed fidelity, failed or was not measured (the manifest says so)")
    exp.add_argument("--models-dir", metavar="DIR", help="the artifact cache (default: the run's output.models_dir)")


def _pct_arg(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"PCT must be a number of percent, e.g. 5, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"PCT must be >= 0, got {text!r}")
    return value


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as a config fragment; flags left unset are None and do not override the file."""
    return {
        "model": {"name": args.model, "weights": args.weights, "pretrained": args.pretrained,
                  "input_shape": args.input_shape, "sequence_length": args.sequence_length},
        "benchmark": {"batch_sizes": args.batch_sizes, "device": args.device, "threads": args.threads,
                      "warmup_iterations": args.warmup, "benchmark_iterations": args.iterations,
                      "min_time_s": args.min_time, "precision_pct": args.precision_pct,
                      "isolation": args.isolation,
                      "rounds": args.rounds, "concurrent_jobs": args.concurrent_jobs,
                      "job_per_cell": args.job_per_cell},
        "optimization": {"variants": args.variants},
        "output": {"dir": args.output_dir, "use_cache": False if args.no_cache else None},
        "ray": {"address": args.ray_address, "per_node": args.per_node},
        "verify": {"inputs": getattr(args, "inputs", None), "images": getattr(args, "images", None),
                   "dataset": getattr(args, "dataset", None), "samples": getattr(args, "samples", None),
                   "calibration_images": getattr(args, "calibration_images", None)},
    }


def _resolve_config(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """(config, where it came from, resume state or None) for ``run`` and ``verify``.

    ``--resume`` takes the interrupted run's saved config; otherwise ``--config`` (or ./config.yaml,
    or the built-in defaults) with the command line's flags on top.
    """
    from infertune.config import load_config

    if getattr(args, "resume", None):
        from infertune.resume import load_resume

        _no_overrides_with_resume(args)
        resume = load_resume(args.resume)
        return resume.config, f"{resume.stem}.config.yaml (resuming)", resume
    config = args.config
    if config is None and Path(DEFAULT_CONFIG).is_file():
        config = DEFAULT_CONFIG
    return load_config(config, overrides_from_args(args)), config or "built-in defaults", None


def _run_pipeline(args: argparse.Namespace, command: str, measure: bool) -> tuple[Any, Any, Any]:
    """Resolve the config, print the header line, run the pipeline with a progress bar; (cfg, result, console)."""
    from infertune.pipeline import run
    from infertune.progress import CellProgress

    cfg, source, resume = _resolve_config(args)
    console = _console()
    console.print(f"{command}: {cfg.model.name} | batch sizes {cfg.benchmark.batch_sizes} | config {source}",
                  markup=False, highlight=False)
    progress = CellProgress(console, enabled=not args.quiet)
    result = run(cfg, log=lambda m: console.print(m, markup=False, highlight=False), progress=progress,
                 measure=measure, resume=resume)
    return cfg, result, console


def cmd_run(args: argparse.Namespace) -> int:
    cfg, result, console = _run_pipeline(args, "infertune", measure=True)
    _print_table(result.rows, console)
    reused = sorted({r.variant for r in result.rows if r.cache_hit})
    if reused:
        console.print(f"reused cached artifacts under {cfg.output.models_dir}/ (from an earlier cell or run) for: "
                      f"{', '.join(reused)}; --no-cache rebuilds them",
                      markup=False, highlight=False)
    console.print(f"results: {result.csv_path} (+ {result.json_path.name}, {result.config_path.name}, "
                  f"{result.csv_path.with_suffix('.jsonl').name})")
    if args.report:
        from infertune.report.build import build_report

        paths = build_report(result.csv_path)
        console.print(f"report: {paths.get('html')}")
    if args.export:
        return _export(result.json_path, args.export, console)
    return 0


def _export(results: Any, to: str, console: Any, **choice: Any) -> int:
    """Export and print what happened; a round trip that does not reproduce the outputs exits 1."""
    from infertune.export.build import RoundTripError, export_run

    try:
        export_run(results, to, log=lambda m: console.print(m, markup=False, highlight=False), **choice)
    except RoundTripError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    return _export(args.results, args.to, _console(), batch_size=args.batch_size, variant=args.variant,
                   force=args.force, models_dir=args.models_dir)


def cmd_verify(args: argparse.Namespace) -> int:
    """Prepare and verify every cell (the pipeline's own path with timing skipped); exit 1 if any fails."""
    from infertune.report.fidelity import fidelity_table

    _, result, console = _run_pipeline(args, "infertune verify", measure=False)
    fidelity_table(result.rows, console)
    console.print(f"results: {result.csv_path} (+ {result.json_path.name}, {result.config_path.name})")
    failed = sorted({r.variant for r in result.rows if r.status == "fidelity_failed"})
    if failed:
        console.print(f"fidelity failed: {', '.join(failed)}", markup=False, highlight=False)
        return 1
    return 0


def _no_overrides_with_resume(args: argparse.Namespace) -> None:
    """--resume reruns with the run's saved config: a flag that changes it would mix two configurations."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_run_args(parser)  # every run flag, present and future; those that only affect the display are fine
    given = [action.option_strings[0] for action in parser._actions
             if action.dest not in ("quiet", "report", "resume") and action.option_strings
             and getattr(args, action.dest, action.default) != action.default]
    if given:
        raise ConfigError(f"--resume continues a run with its saved config; drop {', '.join(given)} "
                          "(or start a new run with them)")


def _console() -> Any:
    """A rich console; piped or in CI logs it is 200 columns wide so tables are not squeezed into 80."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)


def _print_table(rows: list[Any], console: Any) -> None:
    from infertune.report.nodes import print_side_by_side
    from infertune.report.table import seed_table

    seed_table(rows, console)
    print_side_by_side(rows, console)  # --per-node runs: each model's ladder on every node, side by side


def cmd_report(args: argparse.Namespace) -> int:
    from infertune.report.build import build_report
    from infertune.report.data import load_report_data
    from infertune.report.serving import is_scenario_file

    paths = build_report(args.results, args.out)
    run_files = [p for p in args.results if not is_scenario_file(p)]
    if run_files:
        _print_table(load_report_data(run_files).rows, _console())  # small files: reading twice costs nothing
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from infertune.backends.registry import get_backend, list_backends

    for name in list_backends():
        b = get_backend(name)
        precisions = sorted(b.precisions)
        states = []
        for p in precisions:
            a = b.availability(args.device, p)
            states.append(f"{p}: {'ok' if a.ok else 'no (' + a.reason + ')'}")
        print(f"{name:<14} {b.description}\n{'':<14} {'; '.join(states)}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from infertune.env import capture
    from infertune.report.environment import text_lines

    env = capture()
    if args.json:
        import json

        print(json.dumps(env, indent=2))
    else:
        print("\n".join(text_lines(env)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Exit 0 without a regression, 1 with one (only under --fail-on-regression); bad input is 2 in main()."""
    from infertune.report.compare import (
        compare_runs,
        comparison_markdown,
        print_comparison,
    )

    baseline, candidate = _compare_sides(args.runs)
    comparison = compare_runs(baseline, candidate, alpha=args.alpha)
    print_comparison(comparison, args.fail_on_regression, _console())
    if args.markdown:
        Path(args.markdown).write_text(comparison_markdown(comparison, args.fail_on_regression), encoding="utf-8")
        print(f"markdown: {args.markdown}")
    if args.fail_on_regression is not None and comparison.regressions(args.fail_on_regression):
        return 1
    return 0


def _compare_sides(runs: list[str]) -> tuple[list[str], list[str]]:
    """``A B`` or ``A1 A2 -- B1 B2`` (main() turns the ``--`` that argparse would drop into ``_SIDES``)."""
    if _SIDES in runs:
        cut = runs.index(_SIDES)
        baseline, candidate = runs[:cut], runs[cut + 1:]
        if baseline and candidate and _SIDES not in candidate:
            return baseline, candidate
        raise InfertuneError("compare takes baseline runs, then --, then candidate runs, e.g. "
                             "infertune compare A1.json A2.json -- B1.json B2.json")
    if len(runs) != 2:
        raise InfertuneError(f"compare got {len(runs)} files: pass two (BASELINE CANDIDATE), or separate several "
                             "runs per side with --, e.g. infertune compare A1.json A2.json -- B1.json B2.json")
    return [runs[0]], [runs[1]]


#: the separator of ``compare``'s two sides, as argparse receives it.
_SIDES = "‖"

#: exit codes (see the module docstring): a finished run, bad input, the reference failed, Ctrl-C, SIGTERM.
EXIT_OK, EXIT_BAD_INPUT, EXIT_RUN_FAILED, EXIT_SIGINT, EXIT_SIGTERM = 0, 2, 3, 130, 143

def cmd_scenario(args: argparse.Namespace) -> int:
    from infertune.scenario.command import cmd_scenario as run_scenario_command

    return run_scenario_command(args, DEFAULT_CONFIG)


COMMANDS = {"scenario": cmd_scenario, "run": cmd_run, "verify": cmd_verify, "report": cmd_report, "backends": cmd_backends,
            "env": cmd_env, "compare": cmd_compare, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # `infertune` alone: say what it does (benchmark_all.py runs the default job)
        build_parser().print_help()
        return EXIT_OK
    if argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["run", *argv]  # `infertune --batch-size 1` means run
    if argv[:1] == ["compare"]:
        argv = [_SIDES if a == "--" else a for a in argv]  # compare A1 A2 -- B1 B2: keep the separator
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    from infertune.interrupts import RunInterrupted

    try:
        return COMMANDS[args.command](args)
    except InfertuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except RunInterrupted as stop:
        print(f"interrupted by {stop.signal_name}: {stop.summary or 'nothing was written yet'}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted: the result files hold every row finished so far", file=sys.stderr)
        return EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(main())
