"""SIGINT / SIGTERM as an exception raised at a safe point, so that cleanup always runs.

`install()` replaces the default handlers (SIGINT's KeyboardInterrupt, SIGTERM's immediate death)
by one that raises :class:`Interrupted`. Code that must not be cut in half (reserving a temporary
file and recording it, renaming a set of finished outputs into place, writing a checkpoint) runs
inside :func:`deferred`: a signal arriving there is held and raised when the block ends.

The first signal disarms both handlers (later ones are ignored), so a second Ctrl-C cannot
interrupt the cleanup that the first one started; SIGKILL remains the way to stop at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["Interrupted", "deferred", "handled", "install", "pending"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_depth = 0
_pending: int | None = None
_received = False


class Interrupted(BaseException):
    """A SIGINT or SIGTERM was received. A BaseException (like KeyboardInterrupt), so that
    `except Exception` handlers on the way up do not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """The shell convention for death by signal: 128 + the signal number (130, 143)."""
        return 128 + self.signum


def _handler(signum: int, frame) -> None:
    global _pending, _received
    _received = True
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if _depth:
        _pending = signum
        return
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM to :class:`Interrupted` (main thread only, as Python requires)."""
    global _pending
    _pending = None
    for s in SIGNALS:
        signal.signal(s, _handler)


@contextlib.contextmanager
def handled(*, restore_after_signal: bool = True) -> Iterator[None]:
    """:func:`install` for the duration of the block, then the previous handlers again (so an
    in-process caller, a test runner say, keeps its own). A program about to exit on the
    signal passes restore_after_signal=False: a second Ctrl-C then stays ignored to the end,
    instead of raising KeyboardInterrupt in the interpreter's shutdown."""
    global _pending, _received
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    install()
    try:
        yield
    finally:
        if restore_after_signal or not _received:
            for s, h in previous.items():
                signal.signal(s, h)
        _pending = None
        _received = False


def pending() -> int | None:
    """The signal held by an enclosing :func:`deferred` block, if one arrived."""
    return _pending


@contextlib.contextmanager
def deferred(*, raise_at_end: bool = True) -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the duration of the block; with raise_at_end, raise the held one
    (as :class:`Interrupted`) when the outermost block ends. Without, the caller polls
    :func:`pending` and stops at a point of its choosing."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if raise_at_end and not _depth and _pending is not None:
            raise Interrupted(_pending)
