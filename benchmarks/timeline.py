"""Where a run's wall time goes: run infertune's CLI with every executor event timestamped.

    python benchmarks/timeline.py TIMELINE.txt run [infertune run arguments...]
    python benchmarks/timeline.py TIMELINE.txt run --config config.yaml --output-dir results

Writes one line per event (seconds since start, job, batch, stage or event type) and, at the end, a
summary per job: when its first event came (the gap before it is the worker's start, imports and model
load), how long it ran, and the seconds spent in each stage (prepare, verify, measure), read from the
times between consecutive stage events. A lab tool for the cold/warm comparisons
(benchmarks/h200_cold_warm.sh); the run itself is the ordinary CLI, unchanged.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

# run as a script, this folder comes first on sys.path, and benchmarks/transformers.py would shadow the package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from infertune import pipeline
from infertune import sink as sink_module
from infertune.cli import main
from infertune.executors.base import RowEvent, StageEvent


def run_with_timeline(path: Path, argv: list[str]) -> int:
    start = time.perf_counter()
    events: list[tuple[float, str, str, str]] = []
    take = sink_module.Sink.take
    make_executor = pipeline.make_executor

    def note(event):  # type: ignore[no-untyped-def]
        if isinstance(event, StageEvent):
            what, batch = event.stage, event.batch
        elif isinstance(event, RowEvent):
            what, batch = "row", event.row.batch_size
        else:
            what, batch = type(event).__name__, ""
        events.append((time.perf_counter() - start, str(getattr(event, "job_id", "")), str(batch), what))

    def timed_take(self, event):  # type: ignore[no-untyped-def]
        note(event)
        return take(self, event)

    def timed_executor(*args, **kwargs):  # type: ignore[no-untyped-def]
        """The run's executor, its events of the baseline's end-of-run check noted too (they bypass the sink)."""
        executor = make_executor(*args, **kwargs)
        run_then = executor.run_then

        def noted_run_then(jobs, last):  # type: ignore[no-untyped-def]
            rechecks = {job.job_id for job in last}
            for event in run_then(jobs, last):
                if getattr(event, "job_id", "") in rechecks:
                    note(event)
                yield event

        executor.run_then = noted_run_then
        return executor

    sink_module.Sink.take = timed_take
    pipeline.make_executor = timed_executor
    try:
        code = main(argv)
    finally:
        total = time.perf_counter() - start
        with open(path, "w") as out:
            out.writelines(f"{t:8.2f} {job} b{batch} {what}\n" for t, job, batch, what in events)
            out.write(summary(events, total))
    return code


def summary(events: list[tuple[float, str, str, str]], total: float) -> str:
    """Per job: the gap before its first event, its span and its seconds per stage; then the run's totals."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    stages: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    open_stage: dict[str, tuple[str, float]] = {}
    for t, job, _batch, what in events:
        first.setdefault(job, t)
        last[job] = t
        if not what.islower():  # an event type (a notice, the reference's outputs), not a stage or a row
            continue
        if job in open_stage:
            name, since = open_stage.pop(job)
            stages[job][name] += t - since
        if what != "row":
            open_stage[job] = (what, t)
    lines = [f"\n{'job':55s} {'starts at':>9s} {'gap before':>10s} {'span':>7s}  stages (s)"]
    previous_end = 0.0
    totals: dict[str, float] = defaultdict(float)
    gaps = 0.0
    for job in sorted(first, key=first.get):
        gap = max(0.0, first[job] - previous_end)
        gaps += gap
        parts = ", ".join(f"{k} {v:.1f}" for k, v in stages[job].items())
        for k, v in stages[job].items():
            totals[k] += v
        lines.append(f"{job[:55]:55s} {first[job]:9.1f} {gap:10.1f} {last[job] - first[job]:7.1f}  {parts}")
        previous_end = last[job]
    lines.append(f"\ntotal {total:.1f} s: gaps between jobs (worker start, imports, model load) {gaps:.1f} s; "
                 + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(totals.items(), key=lambda kv: -kv[1]))
                 + f"; after the last event {max(0.0, total - max(last.values(), default=0.0)):.1f} s\n")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(run_with_timeline(Path(sys.argv[1]), sys.argv[2:]))
