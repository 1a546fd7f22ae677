"""Issue 16's measurement: BERT through the tool's ladder against hand-tuned transformer recipes, side by side.

    python benchmarks/transformers.py [--model hf:bert-base-uncased] [--sequence-length 128]
                                      [--batch-sizes 1 8] [--rounds 3] [--device cpu|cuda]
                                      [--write-doc docs/results/transformers.md]

1. Runs ``infertune run --model <model> --sequence-length S --batch-size ...`` with the default ladder
   and takes, per batch size, the fastest variant whose outputs pass fidelity (the tool's answer).
2. Measures that variant and each hand-tuned method in interleaved rounds, every (method, batch) in
   its own fresh process per round, samples pooled per method (as ``cpu_ladder.py`` does):

   - ``eager``: the transformers model under ``torch.inference_mode`` (fp16 on CUDA);
   - ``eager_cuda_graph`` (CUDA): that fp16 model captured by hand in one ``torch.cuda.CUDAGraph`` per
     batch size and replayed (what a hand-tuned PyTorch server does for static shapes);
   - ``ort_optimized``: the ONNX export run through ONNX Runtime's transformer optimizer
     (``onnxruntime.transformers.optimizer.optimize_model``, model_type bert: attention, LayerNorm,
     GELU and bias fusions), then a level-ALL session (CPU provider; CUDA provider in fp16 on a GPU);
   - ``ort_optimized_int8``: that optimized model with ``quantize_dynamic`` (the recipe ONNX Runtime
     documents for BERT on CPUs; CPU only);
   - ``ov_fp32`` / ``ov_int8``: ``openvino.convert_model`` of the transformers model, compiled with the
     LATENCY hint and f32 precision; INT8 by ``nncf.quantize(model_type=TRANSFORMER)`` on synthetic
     token batches (CPU only).

3. Prints, per batch size, each method's median and spread and the ratio method / tool-best, and
   optionally writes the markdown to ``--write-doc``.

All methods use the same model with the same seeded random weights (offline: the published BERT-base
architecture) and the same inputs: token ids uniform in the vocabulary, a mask of ones, token types 0.
Check it on small settings first, e.g. a 2-layer BERT folder: ``--model hf:/tmp/tiny-bert
--sequence-length 16 --batch-sizes 1 2 --rounds 1 --min-time 0.2``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# run as a script, this file's folder comes first on sys.path and its name would shadow the transformers package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO / "src"))

CACHE = REPO / "benchmarks" / ".cache" / "transformers"


def _interleave() -> Any:
    """benchmarks/interleave.py, loaded by path (this folder is off sys.path, see above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("interleave", REPO / "benchmarks" / "interleave.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
TOOL_PREFIX = "infertune:"
#: method -> (description for the table, devices it runs on).
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "eager": ("transformers eager (torch.inference_mode; fp16 on CUDA)", ("cpu", "cuda")),
    "eager_cuda_graph": ("transformers fp16 in a CUDA graph, captured by hand", ("cuda",)),
    "ort_optimized": ("ONNX Runtime + its transformer optimizer (fp32 CPU / fp16 CUDA)", ("cpu", "cuda")),
    "ort_optimized_int8": ("ONNX Runtime transformer optimizer + quantize_dynamic INT8", ("cpu",)),
    "ov_fp32": ("OpenVINO convert_model, LATENCY hint, f32", ("cpu",)),
    "ov_int8": ("OpenVINO + NNCF INT8 (model_type=TRANSFORMER)", ("cpu",)),
}


# ---------------------------------------------------------------- child side: build or measure one method
def _loaded(args: argparse.Namespace) -> Any:
    from infertune.models import load_model

    return load_model(args.model, pretrained=False, seed=0, warn=lambda m: None)


def _inputs(args: argparse.Namespace, batch: int) -> dict[str, np.ndarray]:
    """The tool's own timed batch for this model (same specs, same seed)."""
    from infertune.config import ModelConfig
    from infertune.inputs import InputSource, named
    from infertune.models import input_specs

    specs = input_specs(ModelConfig(name=args.model, sequence_length=args.sequence_length, pretrained=False))
    return named(InputSource(specs=specs, kind="synthetic").timed_batch(batch))


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    loaded = _loaded(args)
    feeds = _inputs(args, args.batch)
    t0 = time.perf_counter()
    if args.child.startswith(TOOL_PREFIX):
        call = _tool_call(args, loaded, args.child.removeprefix(TOOL_PREFIX), feeds)
    else:
        call = BUILDERS[args.child](loaded, feeds, args)
    build_s = time.perf_counter() - t0
    if args.build_only:
        print(json.dumps({"build_s": build_s}))
        return
    for _ in range(3):
        call()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < args.min_iters or time.perf_counter() - start < args.min_time:
        t = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t) / 1e6)
    print(json.dumps({"samples_ms": samples, "build_s": build_s}))


def _tool_call(args: argparse.Namespace, loaded: Any, variant_name: str, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
    """The tool's variant, prepared exactly as ``infertune run`` prepares it (same cache under models/, same
    calibration data and cache keys for INT8)."""
    from infertune.backends.base import PrepareContext
    from infertune.backends.registry import get_backend
    from infertune.cache import ArtifactCache
    from infertune.config import ModelConfig, RunConfig
    from infertune.inputs import resolve_source
    from infertune.models import input_specs, model_label
    from infertune.variants import parse_variant

    cfg = RunConfig()
    variant = parse_variant(variant_name)
    specs = input_specs(ModelConfig(name=args.model, sequence_length=args.sequence_length, pretrained=False))
    source, _ = resolve_source(specs=specs, seed=cfg.verify.seed, inputs=cfg.verify.inputs,
                               verify_count=cfg.verify.samples)
    int8 = cfg.optimization.int8.model_dump()
    if variant.precision == "int8":  # the run keys INT8 artifacts by their calibration data
        int8["calibration_id"] = source.calibration_identity()
    ctx = PrepareContext(
        model=loaded.module, example_input=feeds, precision=variant.precision, options=variant.option_dict,
        device=args.device, threads=args.threads,
        cache=ArtifactCache(REPO / cfg.output.models_dir, f"{model_label(args.model)}-{loaded.digest()}"),
        calibration=source.calibration, settings={"onnx_opset": cfg.optimization.onnx_opset, "int8": int8},
        log=lambda m: None,
    )
    runner = get_backend(variant.backend).prepare(ctx)
    native = runner.to_native(feeds)

    def call() -> Any:
        out = runner(native)
        runner.synchronize()
        return out

    return call


def _hf(loaded: Any) -> Any:
    return loaded.module.model  # the transformers model inside infertune's wrapper


def eager(loaded: Any, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> Callable[[], Any]:
    import torch

    model = _hf(loaded).eval().to(args.device)
    if args.device == "cuda":
        model = model.half()
    tensors = {k: torch.from_numpy(v).to(args.device) for k, v in feeds.items()}

    def call() -> Any:
        with torch.inference_mode():
            out = model(**tensors)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return out

    return call


def eager_cuda_graph(loaded: Any, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> Callable[[], Any]:
    import torch

    model = _hf(loaded).eval().to("cuda").half()
    tensors = {k: torch.from_numpy(v).to("cuda") for k, v in feeds.items()}
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(stream):  # warm up on a side stream before capturing, as the CUDA graph docs do
            for _ in range(3):
                model(**tensors)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = model(**tensors)

    def call() -> Any:
        graph.replay()
        torch.cuda.synchronize()
        return out

    return call


def _export(loaded: Any, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> Path:
    """The model exported to ONNX by hand: named inputs, dynamic batch and sequence axes (cached)."""
    import torch

    path = CACHE / f"{Path(args.model).name.replace(':', '_')}-s{args.sequence_length}.onnx"
    if not path.is_file():
        names = list(feeds)
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        axes.update({"last_hidden_state": {0: "batch", 1: "sequence"}, "pooler_output": {0: "batch"}})
        example = tuple(torch.from_numpy(feeds[n][:1]) for n in names)
        # the wrapper takes the inputs positionally (transformers' forward has other arguments in between)
        torch.onnx.export(loaded.module.eval(), example, str(path), input_names=names,
                          output_names=["last_hidden_state", "pooler_output"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    return path


def _optimized(loaded: Any, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    config = _hf(loaded).config
    gpu = args.device == "cuda"
    path = CACHE / f"{Path(args.model).name.replace(':', '_')}-s{args.sequence_length}-opt{'-fp16' if gpu else ''}.onnx"
    if not path.is_file():
        model = optimize_model(str(_export(loaded, feeds, args)), model_type="bert",
                               num_heads=config.num_attention_heads, hidden_size=config.hidden_size, use_gpu=gpu)
        if gpu:
            model.convert_float_to_float16(keep_io_types=True)
        model.save_model_to_file(str(path))
    return path


def _ort_session(path: Path, args: argparse.Namespace) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the tool's rung (shared machine)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.device == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), so, providers=providers)


def ort_optimized(loaded: Any, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> Callable[[], Any]:
    session = _ort_session(_optimized(loaded, feeds, args), args)
    return lambda: session.run(None, feeds)


def ort_optimized_int8(loaded: Any, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> Callable[[], Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = _optimized(loaded, feeds, args)
    path = source.with_name(source.stem + "-int8.onnx")
    if not path.is_file():
        import onnx

        # the optimizer's fused contrib ops defeat shape inference: tell the quantizer their tensors are float
        quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    session = _ort_session(path, args)
    return lambda: session.run(None, feeds)


def _ov_model(loaded: Any, feeds: dict[str, np.ndarray]) -> Any:
    import openvino as ov
    import torch

    example = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.inference_mode():
        return ov.convert_model(_hf(loaded).eval(), example_input=example)


def _ov_call(model: Any, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> Callable[[], Any]:
    import openvino as ov

    model.reshape({name: list(arr.shape) for name, arr in feeds.items()})
    compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                      "INFERENCE_NUM_THREADS": args.threads,
                                                      "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda: request.infer(feeds, share_inputs=True)


def ov_fp32(loaded: Any, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> Callable[[], Any]:
    return _ov_call(_ov_model(loaded, feeds), feeds, args)


def ov_int8(loaded: Any, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> Callable[[], Any]:
    import nncf
    import openvino as ov

    path = CACHE / f"{Path(args.model).name.replace(':', '_')}-s{args.sequence_length}-ov-int8.xml"
    if not path.is_file():
        calibration = _inputs(args, 32)  # the tool's calibration count; other samples than the timed batch
        items = [{k: v[i:i + 1] for k, v in calibration.items()} for i in range(32)]
        quantized = nncf.quantize(_ov_model(loaded, feeds), nncf.Dataset(items), subset_size=len(items),
                                  model_type=nncf.ModelType.TRANSFORMER)
        ov.save_model(quantized, str(path))
    return _ov_call(ov.Core().read_model(str(path)), feeds, args)


BUILDERS: dict[str, Callable[..., Callable[[], Any]]] = {
    "eager": eager, "eager_cuda_graph": eager_cuda_graph, "ort_optimized": ort_optimized, "ort_optimized_int8": ort_optimized_int8,
    "ov_fp32": ov_fp32, "ov_int8": ov_int8,
}


# ---------------------------------------------------------------- parent side
def run_child(method: str, batch: int, args: argparse.Namespace, build_only: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", method, "--batch", str(batch), "--threads", str(args.threads),
           "--min-time", str(args.min_time), "--min-iters", str(args.min_iters), "--model", args.model,
           "--sequence-length", str(args.sequence_length), "--device", args.device]
    if build_only:
        cmd.append("--build-only")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{method} b{batch} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def tool_best(args: argparse.Namespace) -> tuple[dict[int, str], Path]:
    """Run the tool with its default ladder (or read a given results CSV) and pick its best per batch."""
    from infertune.report.table import best_variants
    from infertune.results import read_rows

    results = args.tool_results
    if results is None:
        out = REPO / "benchmarks" / ".out"
        cmd = [sys.executable, "-m", "infertune", "run", "--quiet", "-o", str(out), "--model", args.model,
               "--sequence-length", str(args.sequence_length), "--device", args.device,
               "--batch-size", *map(str, args.batch_sizes)]
        print("running the tool:", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
        results = str(max(out.glob("benchmark_results_*.csv")))
    rows = read_rows(results)
    best = {key[2]: row.variant for key, row in best_variants(rows).items()}
    missing = [b for b in args.batch_sizes if b not in best]
    if missing:
        raise SystemExit(f"the tool found no passing variant at batch sizes {missing} in {results}")
    return best, Path(results)


def main() -> None:
    interleave = _interleave()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    interleave.add_round_options(p)
    p.add_argument("--model", default="hf:bert-base-uncased")
    p.add_argument("--sequence-length", type=int, default=128)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--methods", nargs="+", choices=list(METHODS))
    args = interleave.parse_round_args(p)
    if args.child:
        child(args)
        return
    methods = args.methods or [m for m, (_, devices) in METHODS.items() if args.device in devices]
    if args.device == "cuda" and "ort_optimized" in methods and not _ort_has_cuda():
        methods.remove("ort_optimized")
        print("skipping ort_optimized: this onnxruntime has no CUDAExecutionProvider (a CPU build); "
              "install onnxruntime-gpu to compare with it", flush=True)
    best, results_csv = tool_best(args)
    print("tool's best per batch:", best, flush=True)
    cells = [(f"{TOOL_PREFIX}{best[b]}", b) for b in args.batch_sizes] + \
            [(m, b) for m in methods for b in args.batch_sizes]
    pooled = interleave.interleaved_rounds(cells, args.rounds,
                                lambda m: run_child(m, args.batch_sizes[0], args, build_only=True),
                                lambda m, b: run_child(m, b, args)["samples_ms"], width=36)
    text = render(pooled, best, methods, args, results_csv)
    print(text)
    if args.write_doc:
        Path(args.write_doc).write_text(text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({f"{m}|{b}": s for (m, b), s in pooled.items()}))


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def render(pooled: dict[tuple[str, int], list[float]], best: dict[int, str], methods: list[str],
           args: argparse.Namespace, results_csv: Path) -> str:
    from infertune.env import capture

    summarize = _interleave().summarize
    env = capture(args.threads)
    gpu = f", GPU {env.get('gpu') or 'none'}" if args.device == "cuda" else ""
    lines = [
        f"## {args.model}, sequence length {args.sequence_length}, {args.device}: the tool's best vs hand-tuned recipes",
        "",
        (f"Machine: {env['cpu_model']}, {env['usable_cores']} cores, ISA {', '.join(env['isa'])}{gpu}; "
        f"{args.threads} threads; torch {env['libraries'].get('torch')}, onnxruntime "
        f"{env['libraries'].get('onnxruntime')}, openvino {env['libraries'].get('openvino')}, transformers "
        f"{env['libraries'].get('transformers', 'n/a')}."),
        (f"Method: `python benchmarks/transformers.py --model {args.model} --sequence-length {args.sequence_length} "
        f"--device {args.device} --rounds {args.rounds} --min-time {args.min_time}`; {args.rounds} interleaved rounds, "
        f"each (method, batch) in its own process per round, samples pooled. Tool results: `{results_csv.name}`."),
        "",
    ]
    for b in args.batch_sizes:
        tool = summarize(pooled[(f"{TOOL_PREFIX}{best[b]}", b)])
        lines += [f"### Batch {b}: tool's best = `{best[b]}` (p50 {tool['p50']:.2f} ms)", "",
                  "| method, done by hand | p50 (ms) | IQR (ms) | samples | method / tool-best |",
                  "|---|---:|---:|---:|---:|"]
        for name in methods:
            s = summarize(pooled[(name, b)])
            lines.append(f"| {METHODS[name][0]} | {s['p50']:.2f} | {s['p25']:.2f}–{s['p75']:.2f} | {s['n']} | "
                         f"{s['p50'] / tool['p50']:.2f}× |")
        lines += [(f"| **infertune `{best[b]}`** | **{tool['p50']:.2f}** | {tool['p25']:.2f}–{tool['p75']:.2f} | "
                  f"{tool['n']} | 1.00× |"), ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
