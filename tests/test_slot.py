"""The measurement slot (``executors.slot``): measurements take turns while preparations overlap, a dead
holder frees it, a slotted job is its job to the executors, and the compiling rungs start first."""

from __future__ import annotations

import multiprocessing as mp
import time
from itertools import pairwise

from infertune.executors.base import RowEvent, StageEvent
from infertune.executors.slot import MeasurementSlot, SlottedJob
from infertune.results import ResultRow


def _measure_twice(slot_path: str, job_id: str, queue) -> None:
    from infertune.executors.slot import SlotKeeper

    slot = MeasurementSlot(slot_path) if slot_path else None
    if slot is not None:
        slot.share()
    events: list = []
    keeper = SlotKeeper(events.append, slot)
    for batch in (1, 2):
        keeper(StageEvent(job_id, batch, "prepare"))
        time.sleep(0.05)
        keeper(StageEvent(job_id, batch, "measure"))
        time.sleep(0.3)
        row = ResultRow(model="m", variant=job_id, backend="null", precision="fp32", options="", batch_size=batch,
                        device="cpu")
        keeper(RowEvent(job_id, row))
    queue.put([(e.row.measure_start_unix_s, e.row.measure_end_unix_s, job_id, e.row.batch_size)
               for e in events if isinstance(e, RowEvent)])


def _windows(slot_path: str) -> list[tuple]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_measure_twice, args=(slot_path, f"job{i}", queue)) for i in range(3)]
    for p in procs:
        p.start()
    windows = sorted(w for _ in procs for w in queue.get(timeout=60))
    for p in procs:
        p.join()
    return windows


def test_the_slot_is_what_keeps_measurements_apart(tmp_path):
    overlaps = lambda ws: sum(1 for a, b in pairwise(ws) if a[1] > b[0])
    assert overlaps(_windows("")) > 0  # three processes measuring at once do overlap...
    assert overlaps(_windows(str(tmp_path / "slot.lock"))) == 0  # ...and with the slot they take turns


def test_a_dead_holder_frees_the_slot(tmp_path):
    path = str(tmp_path / "slot.lock")
    ctx = mp.get_context("spawn")
    holder = ctx.Process(target=_hold_forever, args=(path,))
    holder.start()
    time.sleep(1.0)
    holder.kill()
    holder.join()
    slot = MeasurementSlot(path)
    slot.share()
    slot.take()  # would block forever if the dead holder's lock outlived it
    slot.close()


def _hold_forever(path: str) -> None:
    slot = MeasurementSlot(path)
    slot.share()
    slot.take()
    time.sleep(600)


def test_a_slotted_job_is_the_job_to_the_executors():
    from infertune.executors.base import Loss
    from infertune.results import Status

    class Inner:
        job_id, device, threads, batches, memory_limit_mb, modules = "v@0", "cpu", 2, (1, 2), None, ("m",)
        unit, whole_job_timeout, label = "cell", True, "v"

        def lost(self, loss):
            return [loss.batch]

    slotted = SlottedJob(Inner(), "")  # type: ignore[arg-type]
    assert (slotted.job_id, slotted.threads, slotted.batches, slotted.modules, slotted.label) == \
        ("v@0", 2, (1, 2), ("m",), "v")
    assert slotted.lost(Loss(Status.CRASHED, "r", "prepare", 2)) == [2]


def test_compiling_rungs_start_first():
    """Jobs start in this order as room frees up: the long compiles go first, the rest keep the ladder's order."""
    from infertune.backends.registry import get_backend
    from infertune.executors.slot import longest_first
    from infertune.variants import parse_variant

    class _Job:  # what longest_first reads of a VariantJob
        def __init__(self, name: str) -> None:
            self.variant = parse_variant(name)

    ladder = ["pytorch:fp32", "torchscript:fp32", "torch_compile:fp32", "onnxruntime:fp32", "aoti:fp32",
              "openvino:int8"]
    order = [job.variant.name for job in longest_first([_Job(n) for n in ladder])]
    assert order == ["torch_compile:fp32", "aoti:fp32", "pytorch:fp32", "torchscript:fp32", "onnxruntime:fp32",
                     "openvino:int8"]
    assert get_backend("tensorrt").compiles and not get_backend("cudnn_fused").compiles
