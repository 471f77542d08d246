"""A progress bar on stderr for a command's long step (Stage0's indexing, the memory's
embedding): only on a terminal, only for a big job, and gone when the step ends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StderrProgress:
    """``progress(phase, done, total)``: a rich bar, one task per phase, on stderr.

    ``prefix`` starts every task's label; ``labels`` names the phases (a phase without
    one shows as itself). A job smaller than ``minimum`` shows nothing, nor does one
    already done when first told.
    """

    def __init__(self, prefix: str, labels: Mapping[str, str], *, minimum: int) -> None:
        self._prefix = prefix
        self._labels = dict(labels)
        self._minimum = minimum
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self._bar is None:
            if total < self._minimum or done >= total:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn(f"{self._prefix} {{task.description}}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
        task = self._tasks.get(phase)
        if task is None:
            label = self._labels.get(phase, phase)
            task = self._tasks[phase] = self._bar.add_task(label, total=total)
        self._bar.update(task, completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
