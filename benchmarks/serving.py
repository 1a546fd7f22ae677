"""Issue 14's serving benchmark: for one verified variant, offline throughput, the server scenario's highest
VALID QPS at p99 <= the bound with dynamic batching, and batch-1 serving's highest VALID QPS at the same
bound, measured in one run through ``infertune scenario`` (MLPerf LoadGen traffic), with the ratios.

    # this CPU (2 cores): ResNet50, OpenVINO INT8, p99 <= 100 ms
    python benchmarks/serving.py --variant openvino:int8 --latency-bound-ms 100
    # one H200: ResNet50 fp16, p99 <= 15 ms (MLPerf's ResNet50 bound)
    python benchmarks/serving.py --device cuda --variant torch_compile:fp16:channels_last:cuda_graph \\
        --latency-bound-ms 15 --max-batch 32 64 128 256 --max-delay-ms 1 2 4 --instances 1 2 4
    # a check that it works (seconds, tiny model): --quick

Targets (docs/results/serving.md): CPU server >= 80% of offline and > batch-1 serving; H200 server
>= 20,000 QPS and >= 5x batch-1 serving. The result files and LoadGen's logs stay in --output-dir.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--variant", default="openvino:int8")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--latency-bound-ms", type=float, default=100.0)
    p.add_argument("--max-batch", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--max-delay-ms", type=float, nargs="+", default=[5.0, 20.0])
    p.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    p.add_argument("--min-duration-s", type=float, default=10.0)
    p.add_argument("--min-query-count", type=int, default=700)
    p.add_argument("--search-budget-s", type=float, default=3600.0)
    p.add_argument("--search-tolerance", type=float, default=0.03)
    p.add_argument("--output-dir", default="results/serving")
    p.add_argument("--quick", action="store_true", help="tiny model and short LoadGen runs: checks the script works")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.min_duration_s, args.min_query_count = "infertune.testing:tiny_convnet", 0.3, 700
        args.max_batch, args.max_delay_ms, args.instances, args.search_tolerance = [4], [2.0], [1], 0.25

    from infertune.config import load_config
    from infertune.scenario.run import run_scenarios

    def config(max_batch: list[int], delays: list[float], instances: list[int]) -> object:
        shape = [1, 3, 32, 32] if args.quick else [1, 3, 224, 224]
        return load_config(None, {
            "model": {"name": args.model, "pretrained": False, "input_shape": shape},
            "benchmark": {"device": args.device},
            "optimization": {"variants": [args.variant]},
            "output": {"dir": args.output_dir},
            "scenario": {"latency_bound_ms": args.latency_bound_ms, "max_batch": max_batch, "max_delay_ms": delays,
                         "instances": instances, "min_duration_s": args.min_duration_s,
                         "min_query_count": args.min_query_count, "search_budget_s": args.search_budget_s,
                         "search_tolerance": args.search_tolerance},
        })

    start = time.monotonic()
    batched = run_scenarios(config(args.max_batch, args.max_delay_ms, args.instances), ("offline", "server"))
    single = run_scenarios(config([1], [0.0], args.instances), ("server",))
    rows = batched.files.rows
    refused = [r for r in rows + single.files.rows if r.status != "ok"]
    if refused:
        print(f"error: {refused[0].variant} {refused[0].scenario}: {refused[0].status}: {refused[0].error}")
        return 1
    offline = max(rows, key=lambda r: r.qps if r.scenario == "offline" and r.qps else 0.0)
    server = next((r for r in rows if r.scenario == "server" and r.best), None)
    batch1 = next((r for r in single.files.rows if r.scenario == "server" and r.best), None)

    def qps(row: object) -> float:
        return row.target_qps if row is not None else 0.0  # type: ignore[attr-defined]

    print(f"\n{args.model} {args.variant} on {args.device}, p99 bound {args.latency_bound_ms:g} ms "
          f"({time.monotonic() - start:.0f} s)")
    print(f"  offline throughput (dynamic batching, best of max_batch x instances): {offline.qps:10.1f} samples/s"
          f"  [{offline.policy_label}]")
    print(f"  server, dynamic batching: max VALID QPS at the bound:             {qps(server):10.1f} QPS"
          + (f"  [{server.policy_label}, p99 {server.latency_p99_ms:.2f} ms]" if server else "  (none VALID)"))
    print(f"  server, batch 1: max VALID QPS at the bound:                      {qps(batch1):10.1f} QPS"
          + (f"  [{batch1.policy_label}, p99 {batch1.latency_p99_ms:.2f} ms]" if batch1 else "  (none VALID)"))
    if offline.qps:
        print(f"  server / offline:  {qps(server) / offline.qps:6.2f}")
    if qps(batch1):
        print(f"  server / batch 1:  {qps(server) / qps(batch1):6.2f}")
    print(f"  files: {batched.files.csv_path}, {single.files.csv_path}; LoadGen logs: {batched.log_root}, "
          f"{single.log_root}")
    print(f"  {batched.server_outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
