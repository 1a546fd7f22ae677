"""The dynamic batcher and the bucketed instance: every sample answered once with its own output,
batches never above max_batch, a lone sample dispatched once max_delay has passed, static shapes padded."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from infertune.scenario.batcher import DynamicBatcher
from infertune.scenario.engine import BucketedInstance
from infertune.scenario.settings import BatchPolicy
from tests.scenario_fakes import SleepRunner, expected_output, identity_samples


def _instance(policy: BatchPolicy, samples: np.ndarray, fixed_ms: float = 1.0) -> BucketedInstance:
    return BucketedInstance({b: SleepRunner(b, fixed_ms, 0.1) for b in policy.buckets()}, samples)


class _Answers:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[int, list[np.ndarray]] = {}
        self.done = threading.Event()
        self.expected = 0

    def __call__(self, batch, outputs) -> None:
        assert outputs is not None and len(outputs) == len(batch)
        with self.lock:
            for sample, row in zip(batch, outputs):
                self.by_id.setdefault(sample.response_id, []).append(np.array(row))
            if sum(len(v) for v in self.by_id.values()) >= self.expected:
                self.done.set()


@pytest.mark.parametrize("policy", [BatchPolicy(8, 2.0, 1), BatchPolicy(5, 1.0, 3), BatchPolicy(1, 0.0, 2)])
def test_every_sample_answered_once_with_its_own_output(policy):
    samples = identity_samples(37)
    answers = _Answers()
    answers.expected = 300
    batcher = DynamicBatcher(policy, [_instance(policy, samples) for _ in range(policy.instances)], answers)
    batcher.start()
    rng = np.random.default_rng(0)
    indices = rng.integers(0, len(samples), answers.expected)
    for start in range(0, answers.expected, 7):  # arrivals in uneven bursts, from a second thread's view
        batcher.submit((rid, int(indices[rid])) for rid in range(start, min(start + 7, answers.expected)))
        time.sleep(0.0005 * (start % 3))
    assert answers.done.wait(30)
    batcher.stop()
    assert batcher.error is None
    assert sorted(answers.by_id) == list(range(answers.expected))
    for rid, rows in answers.by_id.items():
        assert len(rows) == 1, f"sample {rid} answered {len(rows)} times"
        np.testing.assert_array_equal(rows[0], expected_output(samples, int(indices[rid])))
    sizes = batcher.log.histogram()
    assert max(sizes) <= policy.max_batch
    assert sum(size * count for size, count in sizes.items()) == answers.expected


def test_full_queue_forms_full_batches():
    policy = BatchPolicy(4, 1000.0, 1)  # a delay this long never triggers: only full batches go
    samples = identity_samples(16)
    answers = _Answers()
    answers.expected = 16
    batcher = DynamicBatcher(policy, [_instance(policy, samples)], answers)
    batcher.submit((i, i) for i in range(16))  # queued before any instance runs
    batcher.start()
    assert answers.done.wait(10)
    batcher.stop()
    assert batcher.log.histogram() == {4: 4}


def test_lone_sample_waits_max_delay_then_goes():
    policy = BatchPolicy(8, 30.0, 1)
    samples = identity_samples(4)
    answers = _Answers()
    answers.expected = 1
    batcher = DynamicBatcher(policy, [_instance(policy, samples)], answers)
    batcher.start()
    batcher.submit([(0, 2)])
    assert answers.done.wait(10)
    batcher.stop()
    (formed,) = batcher.log.batches
    assert formed.size == 1
    # the batch left when the delay had passed (not before), and not long after (slack for a busy machine)
    assert 30e6 <= formed.oldest_wait_ns < 30e6 + 500e6


def test_static_shape_runner_gets_padded_batches_and_trimmed_outputs():
    policy = BatchPolicy(8, 0.0, 1)
    samples = identity_samples(10)
    inst = _instance(policy, samples)
    out = inst([3, 9, 1])  # 3 samples run on the bucket of 4 (SleepRunner refuses any other size)
    assert inst.runners[4].calls == [4]
    np.testing.assert_array_equal(out, np.stack([expected_output(samples, i) for i in (3, 9, 1)]))
    assert policy.buckets() == (1, 2, 4, 8)
    assert BatchPolicy(6).buckets() == (1, 2, 4, 6)


def test_an_instance_error_still_answers_and_is_kept():
    policy = BatchPolicy(2, 0.0, 1)
    answered = []

    def boom(indices):
        raise RuntimeError("runtime fell over")

    batcher = DynamicBatcher(policy, [boom], lambda batch, outputs: answered.append((len(batch), outputs)))
    batcher.start()
    batcher.submit([(0, 0), (1, 1)])
    batcher.stop()
    assert answered == [(2, None)]
    assert "fell over" in str(batcher.error)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
def test_a_device_resident_library_answers_like_the_host_path():
    """On a GPU a torch runner's batches are gathered from samples in device memory: same rows, same order."""
    import torch

    from infertune.backends.torch_common import TorchRunner
    from infertune.testing import tiny_convnet

    model = tiny_convnet().eval().to("cuda")
    samples = np.random.default_rng(0).standard_normal((10, 3, 32, 32)).astype(np.float32)
    runners = {size: TorchRunner(model, "cuda", torch.float32) for size in (1, 4, 8)}
    on_device = BucketedInstance(runners, samples, "cuda", samples_on_device=True)
    from_host = BucketedInstance(runners, samples, "cuda", samples_on_device=False)
    assert on_device.device_samples is not None and from_host.device_samples is None
    for indices in ([3], [0, 9, 2], [5, 5, 1, 7, 8, 0]):
        np.testing.assert_allclose(on_device(indices), from_host(indices), rtol=1e-5, atol=1e-5)
        with torch.inference_mode():
            expected = model(torch.from_numpy(samples[indices]).cuda()).cpu().numpy()
        np.testing.assert_allclose(on_device(indices), expected, rtol=1e-4, atol=1e-4)
