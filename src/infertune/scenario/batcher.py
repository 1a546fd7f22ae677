"""Dynamic batching: queued samples gathered into batches of up to ``max_batch`` or until the oldest has
waited ``max_delay_ms``, whichever comes first, run by ``instances`` executor threads at once.

Each instance thread owns one ``infer`` callable (its own runners: nothing is shared between threads,
so a runtime never sees two calls on one session at once) and answers its batch itself, in one
``respond`` call with one output row per sample. A sample leaves the queue exactly once, so it is
answered exactly once. The runtimes release the GIL while they compute, so instances overlap.

If ``infer`` raises, the batch is still answered (LoadGen would otherwise wait forever) and the first
error is kept: the caller turns the trial into a ``failed`` row and never reports its numbers.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from infertune.scenario.settings import BatchPolicy

#: QSL indices of one batch -> one output row per index (a float32 array of shape (n, ...)).
InferBatch = Callable[[list[int]], np.ndarray]


@dataclass(frozen=True)
class QueuedSample:
    """One sample waiting for a batch: LoadGen's response id, its index in the sample library, when it came."""

    response_id: int
    index: int
    enqueued_ns: int


#: answers a batch: the samples in order and their outputs (row i belongs to sample i; None after an error).
Respond = Callable[[list[QueuedSample], "np.ndarray | None"], None]


@dataclass(frozen=True)
class FormedBatch:
    """A batch as dispatched: its size and how long its oldest sample had waited in the queue (ns)."""

    size: int
    oldest_wait_ns: int


@dataclass
class BatchLog:
    """What the batcher formed during a trial (thread-safe appends under the batcher's lock)."""

    batches: list[FormedBatch] = field(default_factory=list)

    def histogram(self) -> dict[int, int]:
        """Batch size -> how many batches of that size were formed."""
        return dict(sorted(collections.Counter(b.size for b in self.batches).items()))

    def mean_size(self) -> float | None:
        return sum(b.size for b in self.batches) / len(self.batches) if self.batches else None


class DynamicBatcher:
    """A queue in front of ``len(instances)`` executor threads (see the module docstring).

    Args:
        policy: ``max_batch`` and ``max_delay_ms`` (``policy.instances`` is ``len(instances)``).
        instances: one ``InferBatch`` per executor thread.
        respond: called from the executor thread with each finished batch.
        clock: monotonic nanoseconds (a seam for tests).
    """

    def __init__(self, policy: BatchPolicy, instances: Sequence[InferBatch], respond: Respond,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        if not instances:
            raise ValueError("the batcher needs at least one instance")
        self.policy = policy
        self._instances = list(instances)
        self._respond = respond
        self._clock = clock
        self._queue: collections.deque[QueuedSample] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.log = BatchLog()
        #: the first exception an instance raised (the trial's numbers are then not reported).
        self.error: BaseException | None = None

    def start(self) -> None:
        for i, infer in enumerate(self._instances):
            t = threading.Thread(target=self._serve, args=(infer,), name=f"infertune-instance-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, samples: Iterable[tuple[int, int]]) -> None:
        """Queue ``(response_id, index)`` pairs; returns at once (called on LoadGen's issue thread)."""
        now = self._clock()
        with self._cond:
            self._queue.extend(QueuedSample(rid, idx, now) for rid, idx in samples)
            self._cond.notify_all()

    def stop(self) -> None:
        """Serve what is queued, then end the instance threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        self._threads.clear()

    def _serve(self, infer: InferBatch) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                outputs = infer([s.index for s in batch])
            except BaseException as err:  # noqa: BLE001 - answer anyway: LoadGen must not wait forever
                with self._cond:
                    self.error = self.error or err
                self._respond(batch, None)
                continue
            self._respond(batch, outputs)

    def _take(self) -> list[QueuedSample] | None:
        """Block until a batch is due: ``max_batch`` samples queued, or the oldest has waited ``max_delay_ms``."""
        max_batch = self.policy.max_batch
        delay_ns = int(self.policy.max_delay_ms * 1e6)
        with self._cond:
            while True:
                while not self._queue:
                    if self._stopping:
                        return None
                    self._cond.wait()
                while self._queue and len(self._queue) < max_batch and not self._stopping:
                    remaining = self._queue[0].enqueued_ns + delay_ns - self._clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining / 1e9)
                if self._queue:  # due; if another instance emptied the queue meanwhile, wait again
                    break
            n = min(max_batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self.log.batches.append(FormedBatch(n, self._clock() - batch[0].enqueued_ns))
            if self._queue:
                self._cond.notify_all()  # the rest may already be due for another idle instance
            return batch
