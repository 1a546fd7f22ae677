"""A progress bar over the run's cells that names the current variant, batch size and stage."""

from __future__ import annotations

from typing import Any


class CellProgress:
    """``[3/12] onnxruntime:int8  batch 8  verify`` on a rich progress bar (quiet when not a terminal)."""

    def __init__(self, console: Any = None, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self.done = 0
        self.total = 0

    def start(self, total: int) -> None:
        self.total = total
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=total)

    def stage(self, variant: str, batch: int, stage: str) -> None:
        if self._progress is not None:
            desc = f"[{min(self.done + 1, self.total)}/{self.total}] {variant:<28} batch {batch:<4} {stage}"
            self._progress.update(self._task, description=desc)

    def advance(self, cells: int = 1) -> None:
        self.done += cells
        if self._progress is not None:
            self._progress.update(self._task, advance=cells)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"done: {self.done} cells")
            self._progress.stop()
            self._progress = None
