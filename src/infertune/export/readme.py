"""The export's README: what it is, the lines that load and call it, its input, its numbers, its files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infertune.export.handover import HandOver
from infertune.export.manifest import README_NAME, ExportManifest
from infertune.report.view import fmt_ips, fmt_ms


def write_readme(folder: Path, m: ExportManifest, handover: HandOver, name: str) -> Path:
    """Write ``folder/README.md``; ``name`` is the folder's name as the user will see it (paths in the code)."""
    path = Path(folder) / README_NAME
    path.write_text(readme_text(m, handover, name), encoding="utf-8")
    return path


def readme_text(m: ExportManifest, handover: HandOver, name: str) -> str:
    hint = m.runtime.options.get("compile_config", {}).get("INFERENCE_PRECISION_HINT", "f32")
    snippet = handover.snippet.format(path=f"{name}/{m.entry_point}", input=m.input.name, precision_hint=hint)
    trip = m.fidelity.get("round_trip", {})
    lines = [
        f"# {m.model}: {m.variant}",
        "",
        f"Exported by infertune {m.infertune_version} on {m.created}. Picked as the {m.selection}.",
        "",
    ]
    if m.forced:
        lines += [f"**Exported with --force although {m.forced}.** Do not deploy it without checking why.", ""]
    lines += [
        (f"Loaded in a fresh process after export and re-verified against the FP32 model on "
         f"{m.verification.inputs}: {_fidelity_sentence(trip)}. Weights: {m.weights}."),
        "",
        "## Load and call it",
        "",
        f"With infertune (checks the files' sha256, the {m.runtime.module} version and this CPU's features):",
        "",
        "```python",
        "import infertune",
        f'model = infertune.load("{name}")' + ("" if m.runtime.needs_torch else "   # does not import torch"),
        "outputs = model(batch)   # numpy in, numpy out (torch tensors give torch tensors); model.check() re-verifies",
        "```",
        "",
        f"With {m.runtime.module} alone (`{m.runtime.install}`, version {m.runtime.version} measured):",
        "",
        "```python",
        snippet,
        "```",
        "",
        _settings_note(m),
        "",
        "## Input",
        "",
        (f"- `{m.input.name}`: {m.input.dtype}, {m.input.layout}, shape "
         f"({', '.join('N' if d is None else str(d) for d in m.input.shape)}); batch sizes: "
         f"{'any' if m.input.batch_sizes is None else ', '.join(map(str, m.input.batch_sizes)) + ' only'}"),
        *[f"- output `{o['name']}`: shape ({', '.join(map(str, o['shape']))})" for o in m.outputs],
        f"- preprocessing: {_preprocessing_text(m.preprocessing)}",
        "",
        "## Measured",
        "",
        *_performance_lines(m),
        "",
        "## Files",
        "",
        *[f"- `{f.name}` ({f.bytes / 1e6:.2f} MB), sha256 `{f.sha256}`" for f in m.files],
        "- `infertune.json`: everything above, machine-readable",
        "",
    ]
    return "\n".join(lines)


def _fidelity_sentence(trip: dict[str, Any]) -> str:
    if not trip:
        return "not run"
    parts = [f"lowest cosine {trip['cosine_min']:.6f}" if trip.get("cosine_min") is not None else "",
             f"max abs error {trip['max_abs_err']:.3g}" if trip.get("max_abs_err") is not None else "",
             f"top-1 agreement {trip['top1_agreement']:.1%}" if trip.get("top1_agreement") is not None else ""]
    verdict = "within the tolerance" if trip.get("ok") else "OUTSIDE the tolerance (" + "; ".join(trip.get("failures", [])) + ")"
    return f"{verdict}: " + ", ".join(p for p in parts if p)


def _settings_note(m: ExportManifest) -> str:
    threads = m.runtime.options.get("intra_op_num_threads") or m.runtime.options.get("threads") \
        or m.runtime.options.get("compile_config", {}).get("INFERENCE_NUM_THREADS")
    notes = {
        "onnx": "infertune.load also applies the benchmark's session options (ORT_ENABLE_ALL, sequential "
                "execution, idle threads not spinning); they are in infertune.json under runtime.options.",
        "openvino-ir": "Keep INFERENCE_PRECISION_HINT: without it OpenVINO runs an fp32 model in bf16 on CPUs "
                       "that have bf16 (different numbers from the verified ones). infertune.load compiles per "
                       "batch size with the benchmark's whole compile config (runtime.options in infertune.json).",
        "torchscript": "On the CPU, optimize_for_inference is applied after loading, as when it was measured.",
        "aoti-pt2": "The package holds compiled native code for this torch version and CPU/GPU; another torch "
                    "version may refuse it.",
        "tensorrt-engine": "An engine runs only on the GPU model and TensorRT version it was built with.",
    }
    return f"{notes.get(m.runtime.format, '')} Measured with {threads} threads: pass `threads={threads}` to " \
           "infertune.load to reproduce that setting." if threads else notes.get(m.runtime.format, "")


def _preprocessing_text(pre: dict[str, Any] | None) -> str:
    if not pre:
        return "not known (the run verified on synthetic inputs); use the model's own preprocessing"
    text = (f"{pre['image']} image, resize the shorter side to {pre['resize_shorter_side_to']} px "
            f"({pre['interpolation']}), centre-crop {pre['center_crop'][0]}x{pre['center_crop'][1]}, "
            f"{pre['scale']}")
    if "mean" in pre:
        text += f", subtract mean {pre['mean']} and divide by std {pre['std']} ({pre['mean_std_from']})"
    return text + f"; {pre['layout']}"


def _performance_lines(m: ExportManifest) -> list[str]:
    p, env = m.performance, m.environment
    if p.get("latency_p50_ms") is None:
        return ["Not measured (exported with --force from a run without timings)."]
    where = env.get("gpu_name") if m.runtime.device == "cuda" else env.get("cpu_model")
    isa = ", ".join(env.get("isa") or []) or "no ISA flags recorded"
    lines = [f"On {where} ({isa}), {p.get('threads')} threads, {p.get('latency_scope', '')} latency:", "",
             "| batch | p50 ms | p99 ms | items/s | vs pytorch:fp32 |", "|---|---|---|---|---|"]
    for b in p.get("by_batch_size", []):
        if b.get("latency_p50_ms") is None:
            lines.append(f"| {b['batch_size']} | {b.get('status', '')} | | | |")
            continue
        speedup = f"{b['speedup_vs_pytorch']:.2f}x" if b.get("speedup_vs_pytorch") else ""
        lines.append(f"| {b['batch_size']} | {fmt_ms(b['latency_p50_ms'])} | {fmt_ms(b.get('latency_p99_ms'))} | "
                     f"{fmt_ips(b.get('throughput_ips'))} | {speedup} |")
    if m.speed_depends_on:
        lines += ["", "These numbers rely on " + "; ".join(n.what for n in m.speed_depends_on)
                  + " (infertune.load warns on a CPU without them)."]
    return lines
