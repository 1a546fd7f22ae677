"""Worker: rebuild the run's model with the run's exact weights and compute the FP32 reference on its verification set.

Run as ``python -m infertune.export.reference RESULTS_JSON OUT_NPZ OUT_INFO_JSON BATCH`` by ``build``,
because model code runs in worker processes, never in the exporting parent. The run's outputs were not
saved, so the reference is computed again by the run's own ``ReferenceJob`` (the saved config, the same
input source, FP32 eager with TF32 off, the batches cut exactly as the exported variant was verified
at ``BATCH``); the weights are checked against the run's digest, so this is the reference the variant
was verified against. The info file says what the inputs were and which normalisation they went through
(the export's ``preprocessing``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from infertune.errors import InfertuneError


def main(argv: list[str]) -> int:
    results_json, out_npz, out_info = (Path(a) for a in argv[:3])
    try:
        info = compute(results_json, out_npz, int(argv[3]))
    except InfertuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out_info.write_text(json.dumps(info))
    return 0


def compute(results_json: Path, out_npz: Path, batch: int) -> dict:
    from infertune import env
    from infertune.config import validate_config
    from infertune.executors.base import JobFailedEvent, ReferenceEvent
    from infertune.export.verification import write_verification
    from infertune.reference import ReferenceJob, load_reference
    from infertune.verify import output_list

    doc = json.loads(results_json.read_text())
    cfg = validate_config(doc["config"], f"the config saved in {results_json}")
    with tempfile.TemporaryDirectory(prefix="infertune-export-") as workdir:
        job = ReferenceJob(model=cfg.model, verify=cfg.verify, workdir=workdir, batches=(batch,),
                           threads=cfg.benchmark.threads or env.usable_cores())
        events: list = []
        job.run(events.append)
        outcome = next((e for e in events if isinstance(e, (ReferenceEvent, JobFailedEvent))), None)
        if not isinstance(outcome, ReferenceEvent):
            why = f"{outcome.stage}: {outcome.reason}" if outcome is not None else "it gave no result"
            raise InfertuneError(f"the FP32 reference could not be recomputed ({why})")
        ref = outcome.reference
        recorded = (doc.get("run") or {}).get("model_digest")
        if recorded and ref.digest != recorded:
            raise InfertuneError(f"the model rebuilt from {results_json}'s config has other weights than the run's "
                                 f"(digest {ref.digest} vs {recorded}: pretrained weights downloaded one time and not "
                                 "the other, or a changed weights file); the export cannot be verified against the run")
        inputs, reference, _labels = load_reference(ref.path, batch)
        pairs = output_list(reference)
    write_verification(out_npz, inputs, pairs)
    source = ref.source
    mean_from = ("verify.mean/verify.std of the run's config" if cfg.verify.mean is not None or cfg.verify.std is not None
                 else "as the run normalised its verification images")
    return {
        "inputs": ref.verify_description,
        "kind": source.source_kind,
        "shape": list(cfg.model.input_shape[1:]),
        "output_names": [name for name, _ in pairs],
        "mean": [round(float(v), 6) for v in source.mean],  # float32 values: more digits are noise
        "std": [round(float(v), 6) for v in source.std],
        "mean_std_from": mean_from,
        "weights": ref.weights_tag,
        "model_digest": ref.digest,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
