"""Progress of long work, for whoever listens (the command line's terminal bar); silent unless
someone does. The library reports, the command line decides how to show it: a bar on a terminal,
nothing in a pipe or a log file, where the log lines already say what happens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: (what, done, total) -> None
Listener = Callable[[str, int, int], None]

_listener: ContextVar[Listener | None] = ContextVar("changedetect_progress", default=None)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the progress reported inside the block to `listener`."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def report(what: str, done: int, total: int) -> None:
    """`done` of `total` units of `what` are finished."""
    listener = _listener.get()
    if listener is not None:
        listener(what, done, total)
