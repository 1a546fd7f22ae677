"""The FP32 reference's outputs are cached: a rerun with the same weights, inputs, torch, CPU and threads
reads them instead of running the model, and anything else that changes the numbers computes them again."""

from __future__ import annotations

import numpy as np

from infertune.config import validate_config
from infertune.executors.base import ReferenceEvent, StageEvent
from infertune.models import input_specs
from infertune.reference import FORWARD_STAGE, ReferenceJob, load_reference

TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}


def _reference(tmp_path, name: str, cache_root: str, threads: int = 1, samples: int = 4):
    cfg = validate_config({"model": TINY, "verify": {"inputs": "synthetic", "samples": samples}})
    workdir = tmp_path / name
    workdir.mkdir()
    job = ReferenceJob(model=cfg.model, verify=cfg.verify, workdir=str(workdir), batches=(1, 2), threads=threads,
                       inputs=input_specs(cfg.model, (1, 2), warn=lambda m: None), cache_root=cache_root)
    events: list = []
    job.run(events.append)
    done = [e.reference for e in events if isinstance(e, ReferenceEvent)]
    assert len(done) == 1, events
    forwards = [e.batch for e in events if isinstance(e, StageEvent) and e.stage == FORWARD_STAGE]
    return done[0], forwards


def test_a_rerun_reads_the_cached_outputs_and_anything_that_changes_them_computes_again(tmp_path):
    cache = str(tmp_path / "models")
    first, ran = _reference(tmp_path, "first", cache)
    again, ran_again = _reference(tmp_path, "again", cache)
    assert ran == [1, 2] and ran_again == []  # the second run never called the model
    for batch in (1, 2):
        inputs, outputs, _ = load_reference(first.path, batch)
        inputs_again, outputs_again, _ = load_reference(again.path, batch)
        assert np.array_equal(inputs, inputs_again) and np.array_equal(outputs, outputs_again)
    assert again.digest == first.digest
    assert _reference(tmp_path, "threads", cache, threads=2)[1] == [1, 2]  # another thread count
    assert _reference(tmp_path, "inputs", cache, samples=6)[1] == [1, 2]  # other verification inputs
    assert _reference(tmp_path, "nocache", "")[1] == [1, 2]  # --no-cache
