"""``infertune scenario {single-stream,multi-stream,server,offline,all}``: its flags and what it prints.

Flags override the config file's ``scenario:`` section (and the model/ladder keys a run shares).
Exit codes: 0 done; 1 the server search found no configuration that meets the bound (the rows and the
best found are written); 2 bad input; 3 the FP32 reference crashed; 130/143 interrupted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from infertune.scenario.settings import SCENARIOS

CHOICES = ("single-stream", "multi-stream", "server", "offline", "all")


def add_parser(sub: Any, int_arg: Any) -> None:
    """The ``scenario`` sub-command (``int_arg`` is the CLI's whole-number parser)."""
    p = sub.add_parser(
        "scenario", help="serve variants under MLPerf LoadGen scenarios with dynamic batching; search the best QPS",
        description="Serve the ladder's variants under MLPerf LoadGen traffic with dynamic batching: offline "
                    "throughput, single-/multi-stream latency, and the highest server QPS within a p99 bound over "
                    "max_batch x max_delay_ms x instances.",
        epilog="exit status: 0 done, 1 no configuration met the latency bound, 2 bad input, 3 the reference crashed")
    p.add_argument("scenario", choices=CHOICES, help="which MLPerf scenario (all: every one)")
    p.add_argument("--config", "-c", help="YAML config (default: ./config.yaml if present)")
    p.add_argument("--model", "-m", help="torchvision/timm name or package.module:factory")
    p.add_argument("--weights", help="local state_dict file")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--input-shape", type=int_arg("dimension"), nargs=4, metavar=("B", "C", "H", "W"))
    p.add_argument("--variants", nargs="+", metavar="V", help="the variants to serve, e.g. openvino:int8")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int_arg("thread count"), help="cores the SUT may use (split between instances)")
    p.add_argument("--output-dir", "-o", help="where result files go (default results/)")
    p.add_argument("--no-cache", action="store_true", help="rebuild converted artifacts even if cached")
    p.add_argument("--isolation", help="where variants run: process (a worker each, the default) or none (debugging)")
    p.add_argument("--latency-bound-ms", type=float, metavar="MS", help="server: p99 bound (default 100)")
    p.add_argument("--server-qps", "--target-qps", dest="server_qps", type=float, metavar="QPS",
                   help="server: run at this rate only instead of searching the best")
    p.add_argument("--max-batch", type=int_arg("max batch"), nargs="+", metavar="N", help="batch policies: max batch sizes")
    p.add_argument("--max-delay-ms", type=float, nargs="+", metavar="MS", help="batch policies: max queueing delays")
    p.add_argument("--instances", type=int_arg("instance count"), nargs="+", metavar="N",
                   help="batch policies: executors serving at once")
    p.add_argument("--min-duration-s", type=float, metavar="S", help="each LoadGen run lasts at least this long")
    p.add_argument("--min-query-count", type=int_arg("query count"), metavar="N", help="... and at least this many queries")
    p.add_argument("--search-budget-s", type=float, metavar="S", help="bound the server search's time")
    p.add_argument("--price-per-hour", type=float, metavar="PRICE", help="the machine's price: cost per million inferences")
    p.add_argument("--force", action="store_true", help="serve variants that fail verification anyway (flagged)")
    p.add_argument("--report", action="store_true", help="also write the serving report (chart, HTML, markdown)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": {"name": args.model, "weights": args.weights, "pretrained": args.pretrained,
                  "input_shape": args.input_shape},
        "benchmark": {"device": args.device, "threads": args.threads, "isolation": args.isolation},
        "optimization": {"variants": args.variants},
        "output": {"dir": args.output_dir, "use_cache": False if args.no_cache else None},
        "scenario": {"latency_bound_ms": args.latency_bound_ms, "server_qps": args.server_qps,
                     "max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms, "instances": args.instances,
                     "min_duration_s": args.min_duration_s, "min_query_count": args.min_query_count,
                     "search_budget_s": args.search_budget_s, "price_per_hour": args.price_per_hour},
    }


def cmd_scenario(args: argparse.Namespace, default_config: str) -> int:
    from infertune.config import load_config
    from infertune.scenario.run import run_scenarios

    config = args.config or (default_config if Path(default_config).is_file() else None)
    cfg = load_config(config, overrides(args))
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    print(f"infertune scenario {args.scenario}: {cfg.model.name} | config {config or 'built-in defaults'}", flush=True)
    result = run_scenarios(cfg, scenarios, force=args.force, log=lambda m: print(m, flush=True))
    files = result.files
    if result.server_outcome:
        print(result.server_outcome)
    print(f"results: {files.csv_path} (+ {files.json_path.name}); LoadGen logs: {result.log_root}")
    if args.report:
        from infertune.report.serving import build_serving_report

        print(f"report: {build_serving_report([files.csv_path])['html']}")
    return 0 if result.bound_met else 1
