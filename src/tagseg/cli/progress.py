"""Progress bars on stderr: the command line's rendering of :class:`tagseg.progress.ProgressListener`."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tagseg.cli import options as opt
from tagseg.progress import ProgressListener, reporting_to

__all__ = ["ProgressBars", "progress_bars"]


def item_columns(unit: str) -> tuple[ProgressColumn, ...]:
    """A description, a bar, ``done/total unit``, the time taken and the time left."""
    return (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )


class ProgressBars(ProgressListener):
    """One rich bar per task a job begins; its clock starts with the first item done.

    Give each job its own (they may share ``bars``): a listener follows the task it began last.
    """

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.task: TaskID | None = None

    def begin(self, description: str, total: int | None) -> None:
        if self.task is not None and not self.bars.tasks[self.task].started:  # a bar that never moved is reused
            self.bars.update(self.task, description=escape(description), total=total)
            return
        self.task = self.bars.add_task(escape(description), total=total, start=False)

    def note(self, text: str) -> None:
        if self.task is None:
            self.begin(text, None)
        else:
            self.bars.update(self.task, description=escape(text))

    def update(self, done: int, total: int | None) -> None:
        if self.task is None:
            self.begin("", total)
        assert self.task is not None
        if not self.bars.tasks[self.task].started:
            self.bars.start_task(self.task)
        self.bars.update(self.task, completed=done, total=total)


@contextmanager
def progress_bars(columns: tuple[ProgressColumn, ...], *, enabled: bool = True, transient: bool = False) -> Iterator[Progress]:
    """Bars on stderr for the block: jobs inside it that report with ``progress=True`` draw on them,
    and the command may give its own job a :class:`ProgressBars` on the bars it yields."""
    with Progress(*columns, console=opt.errors, disable=not enabled, transient=transient) as bars:
        with reporting_to(ProgressBars(bars)):
            yield bars
