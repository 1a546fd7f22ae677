"""The worker's serving session: runners prepared once per (bucket size, threads) and reused by every
trial, instances assembled per batch policy, and one LoadGen trial per call.

Threads: ``instances`` executors share the worker's cores, so each gets ``threads // instances``
intra-op threads (at least one): two instances of one thread each on two cores, as OpenVINO's
throughput streams would split them. Runners are never shared between instances.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from infertune.backends.base import Runner
from infertune.scenario.engine import BucketedInstance
from infertune.scenario.settings import BatchPolicy, TrialSettings
from infertune.scenario.sut import TrialOutcome, run_trial

#: (bucket size, threads) -> a new runner prepared (and verified) for exactly that batch size.
MakeRunner = Callable[[int, int], Runner]


class ServingSession:
    """Runs LoadGen trials of one variant under any batch policy (see the module docstring).

    Args:
        make_runner: prepares one runner; called once per (bucket, threads, instance slot).
        samples: the query sample library (N, *sample_shape) float32.
        device: ``cpu`` or ``cuda``.
        threads: the worker's cores, split between instances.
        log_root: each trial's LoadGen logs go to a new folder under it.
        label: names the trial folders (the variant).
        samples_on_device: on a GPU, keep the library in device memory (``BucketedInstance``).
    """

    def __init__(self, make_runner: MakeRunner, samples: np.ndarray, device: str, threads: int,
                 log_root: Path, label: str, samples_on_device: bool = True) -> None:
        self.samples_on_device = samples_on_device
        self.make_runner = make_runner
        self.samples = samples
        self.device = device
        self.threads = threads
        self.log_root = log_root
        self.label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        self._runners: dict[tuple[int, int, int], Runner] = {}
        self._trials = 0

    def threads_per_instance(self, policy: BatchPolicy) -> int:
        return 1 if self.device == "cuda" else max(1, self.threads // policy.instances)

    def instances(self, policy: BatchPolicy) -> list[BucketedInstance]:
        threads = self.threads_per_instance(policy)
        return [BucketedInstance({size: self._runner(size, threads, slot) for size in policy.buckets()},
                                 self.samples, self.device, self.samples_on_device)
                for slot in range(policy.instances)]

    def prepare_bucket(self, size: int) -> None:
        """Prepare (and so verify) the single-instance runner of one batch size ahead of any traffic."""
        self._runner(size, self.threads_per_instance(BatchPolicy(size)), 0)

    def _runner(self, size: int, threads: int, slot: int) -> Runner:
        key = (size, threads, slot)
        if key not in self._runners:
            self._runners[key] = self.make_runner(size, threads)
        return self._runners[key]

    def estimate_qps(self, policy: BatchPolicy, calls: int = 3) -> float:
        """Samples/s of full batches on one instance, times the instances (LoadGen's expected rate)."""
        instance = self.instances(policy)[0]
        indices = [i % len(self.samples) for i in range(policy.max_batch)]
        instance(indices)  # first call apart (lazy initialisation)
        start = time.perf_counter()
        for _ in range(calls):
            instance(indices)
        per_batch = (time.perf_counter() - start) / calls
        return policy.instances * policy.max_batch / max(per_batch, 1e-6)

    def run(self, trial: TrialSettings, policy: BatchPolicy) -> TrialOutcome:
        self._trials += 1
        qps = f"_{trial.target_qps:.0f}qps" if trial.scenario == "server" else ""
        name = f"{self._trials:03d}_{trial.scenario}_{self.label}_b{policy.max_batch}_d{policy.max_delay_ms:g}_x{policy.instances}{qps}"
        return run_trial(trial, policy, self.instances(policy), self.log_root / name)

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
