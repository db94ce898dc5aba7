"""The ``show_progress=True`` bar (rich): a total when ``len(content)`` is known, a running
count otherwise, and the rate in items per second."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- items/s" if speed is None else f"{speed:,.1f} items/s", style="cyan")


class CountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{int(task.completed):,} items", style="green")


class ProgressReporter:
    """Start with ``start()``, call ``advance(n)`` per reply, ``stop()`` at the end."""

    def __init__(self, description: str, total: int | None) -> None:
        columns: list[ProgressColumn | str] = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn()]  # fmt: skip
        else:
            columns += [CountColumn(), RateColumn(), TimeElapsedColumn()]
        self._progress = Progress(*columns, transient=False)
        self._task = self._progress.add_task(description, total=total)

    def start(self) -> None:
        self._progress.start()

    def advance(self, count: int) -> None:
        self._progress.advance(self._task, count)

    def stop(self) -> None:
        self._progress.stop()
