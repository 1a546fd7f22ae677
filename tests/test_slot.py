"""The measurement slot (``executors.slot``): measurements take turns while preparations overlap, a dead
holder frees it, a slotted job is its job to the executors, and the compiling rungs start first."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import sys
import time
from itertools import pairwise
from typing import Any

import pytest

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


def _hold_until_exit(path: str, held: Any, go: Any) -> None:
    slot = MeasurementSlot(path)
    slot.share()
    slot.keep_until_exit()
    held.send(slot._main)
    go.recv()  # exit when the test says so


def test_a_job_keeps_its_share_of_the_slot_until_its_process_has_exited(tmp_path):
    """A worker's exit (its memory, its CUDA context) must not run beside another job's measurement."""
    path = str(tmp_path / "slot")
    held_recv, held_send = mp.Pipe(duplex=False)
    go_recv, go_send = mp.Pipe(duplex=False)
    child = mp.get_context("fork").Process(target=_hold_until_exit, args=(path, held_send, go_recv))
    child.start()
    fd = held_recv.recv()
    assert fd > 1000  # above every descriptor the worker opened, so the kernel closes it last
    probe = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):  # still shared by the child: no measurement may start
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        go_send.send(None)
        child.join(10)
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the child exited: the slot is free
    finally:
        os.close(probe)


def test_a_job_ends_inductors_compile_workers_before_it_leaves_the_slot(monkeypatch):
    """run_variant's last step: the compile pool torch.compile started ends inside
    the job's share of the slot, not after the worker, beside someone's measurement."""
    import types

    from infertune.cell import stop_compile_workers

    stopped = []
    fake = types.SimpleNamespace(shutdown_compile_workers=lambda: stopped.append(True))
    monkeypatch.setitem(sys.modules, "torch._inductor.async_compile", fake)
    stop_compile_workers()
    assert stopped == [True]
    monkeypatch.delitem(sys.modules, "torch._inductor.async_compile")
    stop_compile_workers()  # a job that never compiled: nothing to stop, no import of Inductor
    assert "torch._inductor.async_compile" not in sys.modules and stopped == [True]


def _measure_behind_gate(slot_path: str, gate_path: str, queue) -> None:
    from infertune.executors.slot import SlotKeeper

    slot = MeasurementSlot(slot_path)
    slot.share()
    keeper = SlotKeeper(lambda event: None, slot, gate_path)
    keeper(StageEvent("recheck", 1, "prepare"))
    keeper(StageEvent("recheck", 1, "measure"))
    queue.put(time.time())


def test_a_job_behind_the_gate_waits_out_of_the_slot_until_it_opens(tmp_path):
    from infertune.executors.slot import Gate

    path = str(tmp_path / "slot.lock")
    gate = Gate()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    waiter = ctx.Process(target=_measure_behind_gate, args=(path, gate.path, queue))
    waiter.start()
    try:
        time.sleep(2.0)  # it prepared and now waits behind the gate...
        assert queue.empty(), "it measured with the gate closed"
        fd = os.open(path, os.O_RDONLY)
        try:  # ...without holding the slot: another job could measure meanwhile
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        opened = time.time()
        gate.open()
        assert queue.get(timeout=30) >= opened
    finally:
        gate.close()
        waiter.join(timeout=30)
    assert not os.path.exists(gate.path)
    Gate.wait(gate.path)  # a gate that is gone holds nobody
