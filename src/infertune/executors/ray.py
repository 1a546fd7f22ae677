"""The Ray executor (``benchmark.isolation: ray``): the ladder's variant jobs as Ray tasks on a cluster.

A team with many models and several kinds of hardware outgrows one machine; Ray already schedules,
places and watches work on a cluster, so infertune does not grow a scheduler of its own. Each variant
job is one Ray generator task. On its node the task runs the same code the default executor runs
(``executors.process.run_in_worker``: a fresh worker process per job, a crash or hang becomes rows, the
memory cap) and streams the job's events back as they happen. The FP32 reference job runs on this
machine in a local worker process; its outputs and weights reach the nodes through Ray's object store.

Honest numbers under parallelism (docs/ray.md):

- a GPU job asks Ray for one GPU, so a node measures one variant per GPU at once; its worker is pinned
  to that GPU's share of the node's cores, so two GPU jobs never share a core;
- CPU jobs on one node share its cores, so they share the node's **measurement slot**
  (``executors.slot``): preparations overlap each other, but a measurement overlaps nothing else of any
  infertune job on that node.

With ``ray.per_node`` (``--per-node``) the plan has a job per (variant, node) and each task is pinned to
its node (``NodeAffinitySchedulingStrategy``, not soft): the whole ladder runs on every node.

A Ray worker that dies (its node lost, Ray's memory monitor, a failure outside the job's own worker)
turns the job's missing rows into ``crashed`` rows with Ray's reason; closing the run (Ctrl-C) cancels
every task still running. Without ``ray.address`` a local Ray instance starts with the first variant
jobs and stops when the run closes the executor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from infertune import interrupts
from infertune.errors import InfertuneError
from infertune.executors.base import (
    ClusterNode,
    Event,
    Executor,
    ExecutorSettings,
    Job,
    JobWatch,
    LogEvent,
    RowEvent,
    import_job_modules,
    register_executor,
)
from infertune.executors.slot import SlottedJob, longest_first, machine_slot_path
from infertune.results import ResultRow, Status

if importlib.util.find_spec("ray") is None:  # executor_class turns this into "isolation: ray needs ray"
    raise ModuleNotFoundError("No module named 'ray': pip install 'infertune[ray]'", name="ray")

#: how often the driver's wait on the cluster wakes to act on a held Ctrl-C (see RayExecutor._on_cluster).
_SIGNAL_CHECK_S = 1.0


# ---------------------------------------------------------------------------------------------- on a node


@dataclass(frozen=True)
class NodeInfo:
    """The machine a job ran on, as its rows record it."""

    host: str
    cpu: str
    isa: str
    gpu: str = ""

    @classmethod
    def here(cls, gpu_ids: Sequence[str] = ()) -> NodeInfo:
        from infertune import env

        flags = env.cpu_flags()
        return cls(host=socket.gethostname(), cpu=env.cpu_model(),
                   isa=", ".join(name for flag, name in env.ISA_FLAGS.items() if flag in flags),
                   gpu=_gpu_name(gpu_ids[0]) if gpu_ids else "")

    def stamp(self, row: ResultRow) -> None:
        row.update(node=self.host, node_cpu=self.cpu, node_isa=self.isa, node_gpu=self.gpu)


def _gpu_name(gpu_id: str) -> str:
    """The name of physical GPU ``gpu_id`` (nvidia-smi ignores CUDA_VISIBLE_DEVICES, so ask for it by index)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(gpu_id)],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return out.splitlines()[0].strip() if out else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@dataclass(frozen=True)
class _Placed:
    """The task's first message: where the job landed (rows the driver writes for it say so too)."""

    job_id: str
    node: NodeInfo


def _node_task(job: Job, shipped: dict[str, Any], settings: ExecutorSettings) -> Iterator[Any]:
    """On a node: run ``job`` in a local worker process and stream its events, rows stamped with the node."""
    import shutil

    import ray

    from infertune.executors.process import run_in_worker

    import_job_modules(job)  # rows written here for a dead worker name its backend, a plugin's too
    gpu_ids = [str(g) for g in ray.get_gpu_ids()] if job.device == "cuda" else []
    node = NodeInfo.here(gpu_ids)
    yield _Placed(job.job_id, node)
    workdir = tempfile.mkdtemp(prefix="infertune-ray-")
    try:
        job = _with_local_files(job, shipped, workdir)
        cores = _core_share(gpu_ids[0], _node_gpus()) if gpu_ids else ()
        usable = len(cores) or len(os.sched_getaffinity(0))
        if dataclasses.is_dataclass(job) and job.threads > usable:
            job = dataclasses.replace(job, threads=usable)  # type: ignore[type-var]
        slot = "" if gpu_ids else machine_slot_path()
        log = _LogTail(os.path.join(workdir, "worker.log"))
        for event in run_in_worker(SlottedJob(job, slot, cores), dataclasses.replace(settings, log_path=log.path)):
            yield from log.events(job.job_id)
            if isinstance(event, LogEvent):
                continue  # the worker printed it into the log, which travels as a whole
            if isinstance(event, RowEvent):
                node.stamp(event.row)
            yield event
        yield from log.events(job.job_id, final=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class _LogTail:
    """The node-local log of one job's worker, sent on in whole lines as ``LogEvent``s."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0

    def events(self, job_id: str, final: bool = False) -> Iterator[LogEvent]:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        if not final:
            data = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next event
        if data:
            self.offset += len(data)
            yield LogEvent(job_id, None, data.decode(errors="replace"))


def _with_local_files(job: Job, shipped: dict[str, Any], workdir: str) -> Job:
    """The job with the reference's files at paths that exist on this node (fetched when they do not)."""
    import ray

    reference = getattr(job, "reference", None)
    if reference is None:
        return job
    moved = {}
    for name in ("path", "weights_path"):
        path = getattr(reference, name)
        if not os.path.exists(path) and path in shipped:
            local = os.path.join(workdir, os.path.basename(path))
            with open(local, "wb") as f:
                f.write(ray.get(shipped[path]))
            moved[name] = local
    return dataclasses.replace(job, reference=dataclasses.replace(reference, **moved)) if moved else job  # type: ignore[type-var]


def _node_gpus() -> int:
    import ray

    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == here:
            return int(node.get("Resources", {}).get("GPU", 0)) or 1
    return 1


def _core_share(gpu_id: str, gpus: int, cores: Sequence[int] | None = None) -> tuple[int, ...]:
    """GPU ``gpu_id``'s cores: the node's cores cut into ``gpus`` equal runs, in order (docs/ray.md)."""
    allowed = sorted(os.sched_getaffinity(0) if cores is None else cores)
    per = max(1, len(allowed) // max(1, gpus))
    start = (int(gpu_id) % max(1, gpus)) * per
    return tuple(allowed[start:start + per]) or tuple(allowed)


# ---------------------------------------------------------------------------------------------- the driver


@register_executor
class RayExecutor(Executor):
    """Variant jobs as Ray tasks, all submitted at once; Ray runs as many as the cluster's resources allow."""

    name = "ray"

    def __init__(self, settings: ExecutorSettings) -> None:
        super().__init__(settings)
        from infertune.config import RayConfig

        self.options = settings.config.ray if settings.config is not None else RayConfig()
        self._started = False

    def run(self, jobs: Sequence[Job]) -> Iterator[Event]:
        from infertune.cell import VariantJob
        from infertune.executors.process import run_in_worker

        for job in jobs:  # the reference: computed once, here, in a worker; its files then travel
            if not isinstance(job, VariantJob):
                yield from run_in_worker(job, self.settings)
        remote = [job for job in jobs if isinstance(job, VariantJob)]
        if remote:
            self._connect()
            yield from self._on_cluster(remote)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def nodes(self) -> list[ClusterNode]:
        """The cluster's alive nodes by name (``ray start --node-name``, by default the node's IP address); two
        nodes of one name are told apart by the start of their node id."""
        import ray

        self._connect()
        alive = [n for n in ray.nodes() if n.get("Alive")]
        names = [str(n.get("NodeName") or n.get("NodeManagerAddress") or n["NodeID"]) for n in alive]
        return [ClusterNode(name=f"{name}-{n['NodeID'][:8]}" if names.count(name) > 1 else name, node_id=n["NodeID"],
                            host=str(n.get("NodeManagerHostname", "")), cpus=float(n.get("Resources", {}).get("CPU", 0)),
                            gpus=int(n.get("Resources", {}).get("GPU", 0)))
                for n, name in zip(alive, names, strict=True)]

    def _connect(self) -> None:
        """Join the configured cluster, or start a local instance (unless this process already joined one)."""
        import ray

        if ray.is_initialized():
            return
        address = self.options.address
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level="warning")
            else:
                from infertune.env import usable_cores

                # workers import what this process imports (tests, plugins registered from the driver's path)
                path = os.pathsep.join(os.path.abspath(p or ".") for p in sys.path)
                ray.init(num_cpus=self.options.num_cpus or usable_cores(), num_gpus=self.options.num_gpus,
                         include_dashboard=False,
                         log_to_driver=False, logging_level="warning",
                         runtime_env={"env_vars": {"PYTHONPATH": path}})
                self._started = True
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise InfertuneError(f"cannot start or reach {where}: {err}; start the cluster with `ray start --head` "
                                 "(then --ray-address auto), or drop --ray-address for a local instance") from None
        finally:  # ray.init replaces them; the run's own (interrupts.catch_signals) decide what a Ctrl-C does
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)

    def _on_cluster(self, jobs: list[Job]) -> Iterator[Event]:
        import ray

        has_gpu = bool(ray.cluster_resources().get("GPU"))
        for job in jobs:
            if job.device == "cuda" and not has_gpu:  # Ray would wait for a GPU forever
                yield from JobWatch(job, self.settings).lost_events(
                    Status.FAILED, "the Ray cluster has no GPU (ray.cluster_resources() lists none) but the run's "
                    "device is cuda: add a GPU node, or run with --device cpu")
        # a relative models folder would land wherever a Ray worker starts: resolve it here, once
        jobs = [dataclasses.replace(job, cache_root=os.path.abspath(job.cache_root))  # type: ignore[type-var]
                for job in jobs if job.device != "cuda" or has_gpu]
        task = _remote_task()
        node_settings = dataclasses.replace(self.settings, log_path=None, config=None)
        shipped = _ship(jobs)
        running: dict[Any, _Running] = {}
        for job in longest_first(jobs):
            files = {p: ref for p, ref in shipped.items() if p in _reference_paths(job)}
            gen = task.options(num_cpus=1, num_gpus=1 if job.device == "cuda" else 0, name=f"infertune {job.label}",
                               scheduling_strategy=_placement(job)).remote(job, files, node_settings)
            running[gen] = _Running(JobWatch(job, self.settings))
        try:
            pending = list(running)
            while pending:
                # A stop signal's handler must not raise inside Ray's C++ calls (Ray turns that into a
                # SystemError): signals are held while in them, and the wait wakes each second to raise one.
                with interrupts.deferred():
                    ready, pending = ray.wait(pending, num_returns=1, timeout=_SIGNAL_CHECK_S)
                    news = [(gen, *self._next(gen, running[gen])) for gen in ready]
                for gen, more, events in news:
                    yield from events
                    if more:
                        pending.append(gen)
                    else:
                        del running[gen]
        finally:
            for gen in running:  # interrupted, or a write failed: nothing keeps running on the cluster
                with contextlib.suppress(Exception):
                    ray.cancel(gen, force=True)

    def _next(self, gen: Any, run: _Running) -> tuple[bool, list[Event]]:
        """The task's next message as events to yield, and whether more may follow."""
        import ray
        from ray.exceptions import RayError

        try:
            ref = next(gen)
        except StopIteration:  # finished: anything still owed is lost (a job that ended without its rows)
            return False, run.stamped(run.watch.lost_events(Status.CRASHED, "the Ray task ended without reporting this"))
        try:
            message = ray.get(ref)
        except RayError as err:
            return False, run.stamped(run.watch.lost_events(Status.CRASHED, ray_reason(err, run.node)))
        if isinstance(message, _Placed):
            run.node = message.node
            return True, []
        run.watch.observe(message)
        if isinstance(message, LogEvent):
            self._write_log(run, message.text)
        return True, [message]

    def _write_log(self, run: _Running, text: str) -> None:
        if self.settings.log_path:
            pinned = getattr(run.watch.job, "pinned", None) is not None  # its label already names the node
            where = (f" (host {run.node.host})" if pinned else f" on {run.node.host}") if run.node else ""
            with open(self.settings.log_path, "a") as f:
                f.write(f"--- {run.watch.job.label}{where} ---\n{text.rstrip()}\n")


def _placement(job: Job) -> Any:
    """Ray's scheduling strategy for ``job``: on its pinned node and no other (``--per-node``), else anywhere."""
    pinned = getattr(job, "pinned", None)
    if pinned is None:
        return "DEFAULT"
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(pinned.node_id, soft=False)


@dataclass
class _Running:
    """A submitted task as the driver tracks it: its job's bookkeeping and, once known, its node."""

    watch: JobWatch
    node: NodeInfo | None = None

    def stamped(self, events: list[Event]) -> list[Event]:
        for event in events:
            if isinstance(event, RowEvent) and self.node is not None:
                self.node.stamp(event.row)
        return events


def ray_reason(err: BaseException, node: NodeInfo | None = None) -> str:
    """What a row says when Ray lost the job's worker: the cause in words, then Ray's own first line."""
    from ray import exceptions as rx

    causes = [
        (rx.OutOfMemoryError, "Ray's memory monitor killed the job's Ray worker (its node ran low on memory)"),
        (rx.NodeDiedError, "the node running the job left the cluster"),
        (rx.TaskUnschedulableError, "the job's node is not in the cluster (it was pinned there: --per-node)"),
        (rx.WorkerCrashedError, "the Ray worker running the job died"),
        (rx.TaskCancelledError, "the job's Ray task was cancelled"),
        (rx.RayTaskError, "the job's Ray task failed"),
    ]
    what = next((text for cls, text in causes if isinstance(err, cls)), "Ray lost the job")
    cause = getattr(err, "cause", None) if isinstance(err, rx.RayTaskError) else None
    said = f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(err).__name__}: {err}"
    first = next((line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", said).splitlines() if line.strip()), "")
    where = f" on {node.host}" if node else ""
    return f"{what}{where} ({first[:300]})"


def _reference_paths(job: Job) -> tuple[str, ...]:
    reference = getattr(job, "reference", None)
    return (reference.path, reference.weights_path) if reference is not None else ()


def _ship(jobs: Sequence[Job]) -> dict[str, Any]:
    """The reference files the jobs read, put once into Ray's object store (a node without them fetches them)."""
    import ray

    shipped: dict[str, Any] = {}
    for job in jobs:
        for path in _reference_paths(job):
            if path not in shipped:
                with open(path, "rb") as f:
                    shipped[path] = ray.put(f.read())
    return shipped


@lru_cache(maxsize=1)
def _remote_task() -> Any:
    import ray

    # no retries: a job that killed its worker would kill the next one too; its rows say what happened
    return ray.remote(max_retries=0)(_node_task)
