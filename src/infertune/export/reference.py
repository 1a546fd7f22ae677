"""Worker: rebuild the run's model with the run's exact weights and compute the FP32 reference on its verification set.

Run as ``python -m infertune.export.reference RESULTS_JSON OUT_NPZ OUT_INFO_JSON`` by ``build``, because
model code runs in worker processes, never in the exporting parent. The run's outputs were not saved,
so the reference is computed again, the way the run computed it (the saved config, the same input
source, FP32 eager with TF32 off); the weights are checked against the run's digest, so this is the
reference the variant was verified against. The info file says what the inputs were and which
normalisation the model expects (the export's ``preprocessing``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from infertune.errors import InfertuneError


def main(argv: list[str]) -> int:
    results_json, out_npz, out_info = (Path(a) for a in argv)
    try:
        info = compute(results_json, out_npz)
    except InfertuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out_info.write_text(json.dumps(info))
    return 0


def compute(results_json: Path, out_npz: Path) -> dict:
    from infertune import env
    from infertune.cell import configure_torch
    from infertune.config import validate_config
    from infertune.export.verification import write_verification
    from infertune.models import load_model
    from infertune.pipeline import _verification_set

    doc = json.loads(results_json.read_text())
    cfg = validate_config(doc["config"], f"the config saved in {results_json}")
    configure_torch(cfg.benchmark.threads or env.usable_cores())
    loaded = load_model(cfg.model.name, cfg.model.pretrained, cfg.model.weights, cfg.model.seed, warn=lambda m: None)
    digest, recorded = loaded.digest(), (doc.get("run") or {}).get("model_digest")
    if recorded and digest != recorded:
        raise InfertuneError(f"the model rebuilt from {results_json}'s config has other weights than the run's "
                             f"(digest {digest} vs {recorded}: pretrained weights downloaded one time and not the "
                             "other, or a changed weights file); the export cannot be verified against the run")
    shape = tuple(cfg.model.input_shape[1:])
    source, (inputs, reference, _labels, _acc) = _verification_set(cfg, loaded, shape, lambda m: None)
    write_verification(out_npz, inputs, reference)
    if cfg.verify.mean is not None or cfg.verify.std is not None:
        mean_from = "verify.mean/verify.std of the run's config"
    elif loaded.preprocessing:
        mean_from = "the model's own, declared by the model"
    else:
        mean_from = "ImageNet's; the model declares none"
    return {
        "inputs": source.describe_verification(len(inputs)),
        "kind": source.source_kind,
        "shape": list(shape),
        "output_names": [name for name, _ in reference],
        "mean": [round(float(v), 6) for v in source.mean],  # float32 values: more digits are noise
        "std": [round(float(v), 6) for v in source.std],
        "mean_std_from": mean_from,
        "weights": loaded.weights,
        "model_digest": digest,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
