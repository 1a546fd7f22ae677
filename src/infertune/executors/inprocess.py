"""The debugging executor (``benchmark.isolation: none``): every job runs here, in the parent process.

A debugger or profiler then sees the model and the runtime directly. What it gives up: a crash ends
the run, no timeout applies, and the user's model code is imported into this process. A job's events
are handed on when the job (or the Ctrl-C that stops it) returns, in order, so rows finished before
an interrupt are still recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from infertune import interrupts
from infertune.executors.base import (
    Event,
    Executor,
    Job,
    LastWordsEvent,
    LogEvent,
    import_job_modules,
    register_executor,
)


@register_executor
class InProcessExecutor(Executor):
    """Runs each job in this process, one after the other."""

    name = "none"
    jobs_at_once = 1

    def run(self, jobs: Sequence[Job]) -> Iterator[Event]:
        for job in jobs:
            events: list[Event] = []
            import_job_modules(job)
            try:
                job.run(events.append)
            except BaseException:
                yield from self._hand_on(job, events)  # what finished before the interrupt is kept
                raise
            finally:
                interrupts.repair_signal_stack()  # a runtime in this process may have left one dangling
            yield from self._hand_on(job, events)

    def _hand_on(self, job: Job, events: list[Event]) -> Iterator[Event]:
        while events:
            event = events.pop(0)
            if isinstance(event, LogEvent) and self.settings.log_path:
                with open(self.settings.log_path, "a") as f:
                    f.write(f"[{job.label} b{event.batch}] {event.text}".rstrip() + "\n")
            if not isinstance(event, LastWordsEvent):
                yield event
