"""Write an export: pick the row, copy its artifact out of the cache (hash-checked), describe it, prove it loads.

Steps, in order: choose the row (``select``); find its cached files (``handover``) and copy them into a
staging folder beside the target, checking each copy against the cache's record (``artifact``);
compute the verification file in a worker (``reference``: the run's inputs and FP32 reference);
write ``infertune.json``; load the staged export in a fresh process (``roundtrip``; torch blocked for
ONNX and OpenVINO) and re-verify it at the precision's tolerance; write the README; move the staging
folder onto the target. A failure anywhere removes the staging folder and leaves the target as it was.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infertune.cache import file_sha256
from infertune.errors import InfertuneError
from infertune.export.artifact import ArtifactError, check_copy
from infertune.export.handover import HandOver, handover_for, no_artifact
from infertune.export.manifest import (
    MANIFEST_NAME,
    VERIFICATION_NAME,
    ExportManifest,
    FileRecord,
    InputSpec,
    IsaNeed,
    RuntimeSpec,
    Verification,
)
from infertune.export.select import Choice, choose
from infertune.results import DIR_MODE, ResultRow, read_rows

#: seconds a worker (model rebuild + reference, or load + check) may take before the export gives up.
WORKER_TIMEOUT_S = 1800

#: the row's performance fields copied into the manifest (units in the names, as in the results).
PERFORMANCE_FIELDS = (
    "batch_size", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
    "latency_min_ms", "latency_max_ms", "latency_scope", "throughput_ips", "host_latency_p50_ms",
    "e2e_latency_p50_ms", "e2e_latency_p99_ms", "e2e_throughput_ips", "speedup_vs_pytorch", "cv",
    "iqr_over_median", "noisy", "iterations", "rounds", "measured_s", "threads", "first_inference_ms",
    "convert_s", "artifact_mb", "peak_host_mb", "peak_device_mb",
)
#: the row's fidelity fields (figures of the benchmark's own verification).
FIDELITY_FIELDS = (
    "fidelity_ok", "cosine_min", "max_abs_err", "mean_abs_err", "max_rel_err", "sqnr_db", "top1_agreement",
    "top5_overlap", "verify_samples", "verify_inputs", "calibration_inputs", "fidelity_outputs", "top1_acc",
    "top5_acc", "ref_top1_acc", "ref_top5_acc",
)
#: CPU features whose absence changes the measured speed: (what, the report names of env.ISA_FLAGS, precisions).
ISA_GROUPS = (
    ("INT8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8)", ("AVX-512 VNNI", "AVX-VNNI", "AMX-INT8"),
     ("int8",)),
    ("native bf16 instructions (AVX-512 BF16 or AMX-BF16)", ("AVX-512 BF16", "AMX-BF16"), ("bf16",)),
    ("AVX-512", ("AVX-512",), ("fp32", "bf16", "int8")),
)


class RoundTripError(InfertuneError):
    """The written export, loaded in a fresh process, did not reproduce the verified outputs."""


@dataclass(frozen=True)
class RunFiles:
    """What an export reads of a run: its rows, saved config, environment and run state."""

    json_path: Path
    rows: list[ResultRow]
    config: dict[str, Any]
    environment: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    manifest: ExportManifest


def read_run(path: Path | str) -> RunFiles:
    """The run's JSON (given, or beside a given CSV): the rows and the saved config export needs."""
    path = Path(path)
    json_path = path if path.suffix == ".json" else path.with_suffix(".json")
    if not json_path.is_file():
        raise InfertuneError(f"no results JSON at {json_path}: pass the .json (or .csv) a run wrote under results/; "
                             "the export needs the run's saved config beside the rows")
    try:
        doc = json.loads(json_path.read_text())
        rows = read_rows(json_path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InfertuneError(f"cannot read {json_path} as a results file ({type(err).__name__}: {err})") from None
    if not isinstance(doc.get("config"), dict):
        raise InfertuneError(f"{json_path} holds no saved config (an old or foreign results file); run again")
    return RunFiles(json_path, rows, doc["config"], doc.get("environment") or {}, doc.get("run") or {})


def export_run(results: Path | str, to: Path | str, batch_size: int | None = None, variant: str | None = None,
               force: bool = False, models_dir: Path | str | None = None,
               log: Callable[[str], None] = print) -> ExportResult:
    """Export a run's fastest verified variant (or ``variant``) into the folder ``to``.

    Args:
        results: the run's results JSON or CSV.
        to: the export folder; replaced if it holds an earlier export, refused if it holds anything else.
        batch_size: pick the fastest at this batch size (default: the largest measured).
        variant: export this variant instead of the fastest.
        force: export ``variant`` even if it failed fidelity, failed or was not measured.
        models_dir: the artifact cache (default: the run's ``output.models_dir``).
        log: one-line progress messages.

    Raises:
        InfertuneError: nothing exportable, a missing or changed artifact, a bad target folder.
        RoundTripError: the export, loaded in a fresh process, no longer matches the reference.
    """
    run = read_run(results)
    choice = choose(run.rows, no_artifact, batch_size, variant, force)
    row = choice.row
    handover = handover_for(row)
    target = Path(to)
    _check_target(target)
    models = Path(models_dir or (run.config.get("output") or {}).get("models_dir") or "models")
    artifact = models / row.artifact
    if not artifact.exists():
        raise ArtifactError(f"{row.variant}'s artifact {artifact} is gone (the cache was cleared or moved): run "
                            "the variant again, or pass --models-dir where the run's models/ folder is now")
    cached = handover.files(artifact)
    log(f"exporting {row.variant}: {choice.selection}")
    if choice.forced:
        log(f"warning: exported although {choice.forced} (--force); the manifest says so")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    staging.chmod(DIR_MODE)  # mkdtemp's 0700 would keep the handed-over folder from colleagues
    try:
        records = []
        for item in cached:
            copy = staging / item.export_name
            shutil.copyfile(item.path, copy)
            records.append(FileRecord(item.export_name, check_copy(item, copy), copy.stat().st_size))
        log("computing the FP32 reference on the run's verification inputs (worker process)")
        info = _reference(run.json_path, staging, row.batch_size)
        records.append(FileRecord(VERIFICATION_NAME, file_sha256(staging / VERIFICATION_NAME),
                                  (staging / VERIFICATION_NAME).stat().st_size))
        manifest = _manifest(run, choice, handover, records, info)
        manifest.write(staging)
        log("loading the export in a fresh process" + (" (torch blocked)" if not handover.needs_torch else "")
            + " and re-verifying it")
        trip = _round_trip(staging, block_torch=not handover.needs_torch)
        _record_round_trip(manifest, trip)
        fid = trip["fidelity"]
        if not fid["ok"] and not choice.forced:
            raise RoundTripError(f"the export of {row.variant}, loaded in a fresh process, does not reproduce the "
                                 f"verified outputs: {'; '.join(fid['failures'])} ({_figures(fid)}); nothing was "
                                 f"written to {target}")
        if not fid["ok"]:
            log(f"warning: the round trip is outside the {row.precision} tolerance too ({_figures(fid)}); "
                "exported because of --force")
        manifest.write(staging)
        from infertune.export.readme import write_readme

        write_readme(staging, manifest, handover, target.name)
        _replace(target, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"export: {target}/ ({manifest.entry_point}, {MANIFEST_NAME}, README.md); round trip: {_figures(fid)}")
    return ExportResult(target, manifest)


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST_NAME).is_file())):
        raise InfertuneError(f"{target} exists and is not an infertune export; pick another --to folder or remove it")


def _replace(target: Path, staging: Path) -> None:
    """Move the finished staging folder onto ``target`` (an earlier export there is replaced)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


# ---------------------------------------------------------------- workers


def _worker(module: str, args: list[str], what: str) -> None:
    """Run ``python -m module args`` with this infertune first on the path; raise with its stderr on failure."""
    import infertune

    src = str(Path(infertune.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                              timeout=WORKER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InfertuneError(f"{what} took longer than {WORKER_TIMEOUT_S} s; nothing was exported") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout or "").strip().splitlines() if line.strip()]
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        if errors:
            detail = errors[-1]
        else:  # a crash in native code (a runtime that cannot load the artifact) or a bug: show its end
            import signal

            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            detail = how + ("\n" + "\n".join(lines[-15:]) if lines else "")
        raise InfertuneError(f"{what} failed: {detail}")


def _reference(results_json: Path, staging: Path, batch: int) -> dict[str, Any]:
    info = staging / "reference_info.json"
    _worker("infertune.export.reference", [str(results_json), str(staging / VERIFICATION_NAME), str(info), str(batch)],
            "computing the FP32 reference")
    data = json.loads(info.read_text())
    info.unlink()
    return data


def _round_trip(staging: Path, block_torch: bool) -> dict[str, Any]:
    out = staging.parent / f"{staging.name}.roundtrip.json"
    try:
        _worker("infertune.export.roundtrip", [str(staging), str(out), *(["--block-torch"] if block_torch else [])],
                "loading the export in a fresh process" + (" without torch" if block_torch else ""))
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


# ---------------------------------------------------------------- the manifest


def _manifest(run: RunFiles, choice: Choice, handover: HandOver, records: list[FileRecord],
              info: dict[str, Any]) -> ExportManifest:
    import infertune
    from infertune.config import tolerances, validate_config

    row = choice.row
    cfg = validate_config(run.config, f"the config saved in {run.json_path}")
    tolerance = asdict(tolerances(cfg)[row.precision])
    threads = row.threads or run.environment.get("threads") or 0
    batches = handover.batch_sizes(row)
    return ExportManifest(
        variant=row.variant, backend=row.backend, precision=row.precision, options=row.options, model=row.model,
        weights=row.weights, model_digest=info["model_digest"], entry_point=records[0].name, files=records,
        runtime=RuntimeSpec(format=handover.format, module=handover.module,
                            distributions=list(handover.distributions),
                            version=_measured_version(handover, run.environment), install=handover.install,
                            device=row.device, needs_torch=handover.needs_torch,
                            options=handover.options(row, int(threads))),
        input=InputSpec(name="input", shape=[None if batches is None else row.batch_size, *info["shape"]],
                        dtype="float32", layout="NCHW", batch_sizes=batches),
        verification=Verification(file=VERIFICATION_NAME, samples=cfg.verify.samples, batch_size=row.batch_size,
                                  inputs=info["inputs"], tolerance=tolerance,
                                  output_names=info["output_names"]),
        speed_depends_on=_isa_needs(row, run.environment),
        selection=choice.selection, forced=choice.forced,
        preprocessing=_preprocessing(info),
        fidelity={"at_benchmark": _fields(row, FIDELITY_FIELDS),
                  **({"benchmark_error": row.error} if row.error else {})},
        performance={**_fields(row, PERFORMANCE_FIELDS), "by_batch_size": _by_batch(run.rows, row)},
        environment=run.environment,
        source={"results": str(run.json_path), "run_id": row.run_id, "cell": row.cell_id,
                "cache_entry": row.artifact, "weights": info["weights"]},
        created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        infertune_version=infertune.__version__,
    )


def _record_round_trip(manifest: ExportManifest, trip: dict[str, Any]) -> None:
    """Fill in what only loading the export tells: its figures, its input name and its outputs."""
    manifest.fidelity["round_trip"] = {k: v for k, v in trip["fidelity"].items() if k != "outputs"}
    manifest.input = InputSpec(**{**asdict(manifest.input), "name": trip["input_name"]})
    manifest.outputs = trip["outputs"]


def _measured_version(handover: HandOver, environment: dict[str, Any]) -> str:
    """The runtime's version in the run's environment (what measured it), else the one installed here."""
    import importlib.metadata

    libraries = environment.get("libraries") or {}
    for dist in handover.distributions:
        if dist in libraries:
            return str(libraries[dist])
    for dist in handover.distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _isa_needs(row: ResultRow, environment: dict[str, Any]) -> list[IsaNeed]:
    """The CPU feature groups the run's machine had and this variant's speed relies on (CPU rows only)."""
    if row.device != "cpu":
        return []
    from infertune.env import ISA_FLAGS

    flag_of = {name: flag for flag, name in ISA_FLAGS.items()}
    had = set(environment.get("isa") or [])
    return [IsaNeed(what, [flag_of[n] for n in names])
            for what, names, precisions in ISA_GROUPS if row.precision in precisions and had & set(names)]


def _preprocessing(info: dict[str, Any]) -> dict[str, Any] | None:
    """The preprocessing the verification images went through (``inputs.preprocess``), when images were used."""
    channels, height, width = info["shape"]
    if info["kind"] == "synthetic" or channels not in (1, 3):
        return None
    return {
        "image": "RGB" if channels == 3 else "greyscale",
        "resize_shorter_side_to": round(max(height, width) * 256 / 224),
        "interpolation": "bilinear",
        "center_crop": [height, width],
        "scale": "pixel values / 255 (to [0, 1])",
        **({"mean": info["mean"], "std": info["std"], "mean_std_from": info["mean_std_from"]} if channels == 3 else {}),
        "layout": "NCHW (channels first), float32",
    }


def _fields(row: ResultRow, names: tuple[str, ...]) -> dict[str, Any]:
    values = asdict(row)
    return {name: values[name] for name in names if values[name] not in (None, "")}


def _by_batch(rows: list[ResultRow], chosen: ResultRow) -> list[dict[str, Any]]:
    same = [r for r in rows if r.variant == chosen.variant and r.model == chosen.model and r.device == chosen.device]
    return [_fields(r, ("batch_size", "status", "latency_p50_ms", "latency_p99_ms", "throughput_ips",
                        "speedup_vs_pytorch", "fidelity_ok", "cosine_min")) for r in sorted(same, key=lambda r: r.batch_size)]


def _figures(fid: dict[str, Any]) -> str:
    parts = [f"cosine_min {fid['cosine_min']:.6f}" if fid.get("cosine_min") is not None else "",
             f"max_abs_err {fid['max_abs_err']:.3g}" if fid.get("max_abs_err") is not None else "",
             f"max_rel_err {fid['max_rel_err']:.3g}" if fid.get("max_rel_err") is not None else "",
             f"top1_agreement {fid['top1_agreement']:.1%}" if fid.get("top1_agreement") is not None else "",
             f"{fid.get('samples')} samples"]
    return ", ".join(p for p in parts if p)
