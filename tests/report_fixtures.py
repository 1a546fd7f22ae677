"""Synthetic result files for the report tests: a realistic ladder with every kind of row, written by
the same ``ResultFiles`` a run uses, so the tests read what a user's run would have written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from infertune.results import ResultFiles, ResultRow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNAVAILABLE_REASON = "pip install infertune[openvino]"
FAILED_REASON = "RuntimeError: export failed at aten::foo"
ENVIRONMENT = {  # the keys infertune.env.capture() writes
    "cpu_model": "AMD EPYC 7B13 (test)",
    "isa": ["AVX2", "FMA", "F16C"],
    "int8_dot_product": False,
    "logical_cores": 2,
    "usable_cores": 2,
    "threads": 2,
    "os": "Linux-6.1-x86_64",
    "python": "3.11.2",
    "machine": "x86_64",
    "libraries": {"torch": "2.14.1", "onnxruntime": "1.32.0"},
    "physical_cores": 1,
}

# (variant, backend, precision, p50 ms at batch 1, cosine, status, error, noisy)
LADDER = [
    ("pytorch:fp32", "pytorch", "fp32", 118.0, 1.0, "ok", "", False),
    ("torchscript:fp32", "torchscript", "fp32", 92.0, 0.99999, "ok", "", True),
    ("onnxruntime:fp32", "onnxruntime", "fp32", 61.0, 0.99998, "ok", "", False),
    # faster than everything, but its predictions drift: must never be "the fastest that keeps predictions"
    ("onnxruntime:int8", "onnxruntime", "int8", 25.0, 0.91, "fidelity_failed", "cosine 0.9100 < 0.98", False),
    ("openvino:int8", "openvino", "int8", None, None, "unavailable", UNAVAILABLE_REASON, False),
    ("torch_compile:fp32", "torch_compile", "fp32", None, None, "failed", FAILED_REASON, False),
]
MEASURED = [v for v, _, _, p50, *_ in LADDER if p50 is not None]

TENSORRT_REASON = "TensorRT runs only on NVIDIA GPUs (device is cpu): run with --device cuda on a machine with one"
CRASH_REASON = ("worker killed by SIGSEGV while measuring batch 8: the runtime crashed inside its own code; "
                "the log results/benchmark_results_20260101_000000.logs/torch_compile_fp32_max-autotune.log holds "
                "the last lines it printed")
#: what a default CPU run's ladder looks like: the harness row, every backend, two reasons of the same kind,
#: a long crash reason, a long variant name, a 7.26x winner, a noisy row and a fidelity failure.
DEFAULT_CPU_LADDER = [
    ("pytorch:fp32", "pytorch", "fp32", 118.0, 1.0, "ok", "", False),
    ("null:fp32", "null", "fp32", 0.0163, None, "ok", "", False),
    ("torchscript:fp32", "torchscript", "fp32", 92.0, 0.99999, "ok", "", True),
    ("torch_compile:fp32", "torch_compile", "fp32", 80.5, 0.99999, "ok", "", False),
    ("torch_compile:fp32:max-autotune", "torch_compile", "fp32", None, None, "crashed", CRASH_REASON, False),
    ("aoti:fp32", "aoti", "fp32", 79.0, 0.99999, "ok", "", False),
    ("onnxruntime:fp32", "onnxruntime", "fp32", 61.0, 0.99998, "ok", "", False),
    ("onnxruntime:int8", "onnxruntime", "int8", 25.0, 0.91, "fidelity_failed", "cosine 0.9100 < 0.98", False),
    ("openvino:fp32", "openvino", "fp32", 55.0, 0.99998, "ok", "", False),
    ("openvino:int8", "openvino", "int8", 16.25, 0.9991, "ok", "", False),
    ("tensorrt:fp32", "tensorrt", "fp32", None, None, "unavailable", TENSORRT_REASON, False),
    ("tensorrt:fp16", "tensorrt", "fp16", None, None, "unavailable", TENSORRT_REASON, False),
]


#: how far a variant's median moves between identical runs (uniform within ± this), after issue 12's four
#: identical ResNet18 runs on a quiet machine: medians spread 0.9% (ORT), 2.2% (eager), 10.8% (OpenVINO INT8).
RUN_DRIFT = {"pytorch:fp32": 0.011, "torchscript:fp32": 0.011, "onnxruntime:fp32": 0.0045,
             "onnxruntime:int8": 0.055}


def make_rows(batches: tuple[int, ...] = (1, 8), model: str = "resnet50", seed: int = 0, device: str = "cpu",
              scale: dict[str, float] | None = None, n: int = 40,
              ladder: list[tuple] | None = None, rounds: int = 1,
              drift: dict[str, float] | None = None) -> tuple[list[ResultRow], dict[str, list[float]]]:
    """Rows for a ladder (one unavailable, one failed, one fidelity_failed, one noisy) and their raw samples.

    Args:
        scale: multiply a variant's latencies, e.g. ``{"onnxruntime:fp32": 1.15}`` for a 15% slowdown.
        n: raw samples per measured cell and round.
        rounds: rounds per cell, recorded in ``round_p50s_ms`` as a run with ``benchmark.rounds`` does.
        drift: per variant, how far the machine moves its median between runs (e.g. ``RUN_DRIFT``): each
            round of each run is scaled by a factor drawn uniformly within ± that fraction. A round is a fresh
            worker minutes after the last, so it sees the drift a separate run would.
    """
    rng = np.random.default_rng(seed)
    scale = scale or {}
    drift = drift or {}
    rows: list[ResultRow] = []
    samples: dict[str, list[float]] = {}
    for batch in batches:
        for variant, backend, precision, p50_b1, cos, status, error, noisy in ladder or LADDER:
            row = ResultRow(model=model, variant=variant, backend=backend, precision=precision, options="",
                            batch_size=batch, device=device, status=status, error=error, run_id="t1",
                            latency_scope="end_to_end" if p50_b1 else "")
            if p50_b1 is not None:
                spread = 0.2 if noisy else 0.03
                # per-image cost drops a little with batch size, as on a real CPU
                centre = p50_b1 * scale.get(variant, 1.0) * batch * 0.9 ** np.log2(batch)
                per_round = []
                for _ in range(rounds):
                    moved = centre * (1 + rng.uniform(-1, 1) * drift[variant]) if variant in drift else centre
                    per_round.append(np.abs(moved * (1 + spread * rng.standard_normal(n))))
                s = np.concatenate(per_round)
                row.rounds = rounds
                row.round_p50s_ms = json.dumps([float(np.median(r)) for r in per_round])
                p25, p50, p75, p95, p99 = np.percentile(s, [25, 50, 75, 95, 99])
                row.latency_p50_ms = float(p50)
                row.latency_p95_ms = float(p95)
                row.latency_p99_ms = float(p99)
                row.latency_min_ms = float(s.min())
                row.latency_max_ms = float(s.max())
                row.latency_mean_ms = float(s.mean())
                row.throughput_ips = batch * 1000.0 / float(p50)
                row.iqr_over_median = float((p75 - p25) / p50)
                row.noisy = noisy
                row.iterations = len(s)
                if cos is not None:  # None: a row without outputs to compare (the null backend)
                    row.cosine_min = cos
                    row.sqnr_db = 40.0 if cos > 0.99 else 12.0
                    row.top1_agreement = 1.0 if cos > 0.99 else 0.75
                    row.fidelity_ok = status == "ok"
                samples[row.cell_id] = [float(x) for x in s]
            if variant == "onnxruntime:int8":
                row.note = "INT8 slower than FP32: CPU lacks VNNI"
            rows.append(row)
    return rows, samples


def write_rows(folder: Path, rows: list[ResultRow], samples: dict[str, list[float]] | None = None,
               name: str = "benchmark_results_20260101_000000", environment: dict | None = None,
               config: dict | None = None) -> Path:
    """Write rows as a run would (CSV + JSON); returns the CSV path."""
    files = ResultFiles(folder / f"{name}.csv", folder / f"{name}.json",
                        config=config if config is not None else {"model": {"name": "resnet50"},
                                                                  "benchmark": {"batch_sizes": [1, 8]}},
                        environment=environment if environment is not None else ENVIRONMENT)
    for row in rows:
        files.add(row, (samples or {}).get(row.cell_id))
    return files.csv_path


def write_run(folder: Path, name: str = "benchmark_results_20260101_000000", **kw) -> Path:
    """A whole synthetic run on disk; keyword arguments go to ``make_rows``."""
    rows, samples = make_rows(**kw)
    return write_rows(folder, rows, samples, name)


def p50_of(rows: list[ResultRow], variant: str, batch: int) -> float:
    return next(r.latency_p50_ms for r in rows if r.variant == variant and r.batch_size == batch)
