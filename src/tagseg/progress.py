"""Progress of long jobs (a batch, an evaluation, a database build), told to one kind of listener.

A job calls a :class:`ProgressListener`'s hooks as it goes; what is drawn is the caller's choice
(the command line draws bars on stderr, :mod:`tagseg.cli.progress`). A job that takes
``progress=True`` reports to the listener of :func:`reporting_to` around it, if any, which lets the
command line show the progress of jobs deep inside a call (the shipped vocabulary embedded on
first use); ``progress=False`` silences it, and a listener given to the job itself is used as is.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

__all__ = ["ProgressListener", "listener_for", "reporting_to"]


class ProgressListener:
    """Hooks a long job calls as it goes; every one does nothing here (subclass the ones you show).

    A job :meth:`begin`\\ s a task (a new call begins the next one, e.g. the next input file), may
    :meth:`note` what it is at, and reports with :meth:`update` how many items are done out of
    ``total`` (``None`` while unknown; a total may change, when skipped items leave it or an
    estimate improves).
    """

    def begin(self, description: str, total: int | None) -> None:
        """A task of ``total`` items starts."""

    def note(self, text: str) -> None:
        """What the task is at now (loading models, an image's name)."""

    def update(self, done: int, total: int | None) -> None:
        """``done`` items of ``total`` are done."""


_SILENT = ProgressListener()
_CURRENT: ContextVar[ProgressListener] = ContextVar("tagseg_progress", default=_SILENT)


@contextmanager
def reporting_to(listener: ProgressListener) -> Iterator[ProgressListener]:
    """Jobs started inside the block with ``progress=True`` report to ``listener``."""
    token = _CURRENT.set(listener)
    try:
        yield listener
    finally:
        _CURRENT.reset(token)


def listener_for(progress: bool | ProgressListener) -> ProgressListener:
    """The listener a job reports to: the given one, the surrounding :func:`reporting_to`'s (``True``) or none (``False``)."""
    if isinstance(progress, ProgressListener):
        return progress
    return _CURRENT.get() if progress else _SILENT
