"""Progress drawn on the terminal: the transformation's bar and the rebuild's lines.

The library reports progress through callbacks (`TransformProgress`, `BuildProgress`);
only the CLI turns them into terminal output.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..projections import BuildProgress
from ..schema import TransformProgress

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["TransformBar", "format_progress"]


class TransformBar:
    """Progress on stderr (streams done, events done, events per second): pass it as
    ``transform(progress=...)`` inside ``with TransformBar():``."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress: Progress = Progress(
            TextColumn("{task.description:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: tuple[TaskID, TaskID] | None = None
        self._began = time.monotonic()

    def __enter__(self) -> TransformBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, report: TransformProgress) -> None:
        if self._tasks is None:
            self._tasks = (
                self._progress.add_task("streams", total=report.streams, rate=""),
                self._progress.add_task("events", total=report.events, rate=""),
            )
            self._began = time.monotonic()
        streams, events = self._tasks
        took = time.monotonic() - self._began
        rate = f"{report.events_done / took:,.0f} events/s" if took > 0 else ""
        self._progress.update(streams, completed=report.streams_done)
        self._progress.update(events, completed=report.events_done, rate=rate)


def format_progress(p: BuildProgress) -> str:
    """One line for a terminal: ``orders v2 p0: 45% (4,500/10,000), 1,234 ev/s, 4 s left``."""
    left = "?" if p.eta is None else f"{p.eta:,.0f} s"
    return (
        f"{p.name} v{p.version} p{p.partition}: {p.fraction:.0%} ({p.done:,}/{p.total:,}), "
        f"{p.rate:,.0f} ev/s, {left} left"
    )
