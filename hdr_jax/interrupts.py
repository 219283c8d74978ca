"""SIGINT / SIGTERM as an exception raised at a safe point, so that cleanup always runs.

`install()` replaces the default handlers (SIGINT's KeyboardInterrupt, SIGTERM's immediate death)
by one that raises :class:`Interrupted`. Code that must not be cut in half (reserving a temporary
file and recording it, renaming a set of finished outputs into place, writing a checkpoint) runs
inside :func:`deferred`: a signal arriving there is held and raised when the block ends.

The first signal disarms both handlers (later ones are ignored), so a second Ctrl-C cannot
interrupt the cleanup that the first one started; SIGKILL remains the way to stop at once.

Python runs a signal handler between any two bytecodes, also inside a finaliser (``__del__``, a
garbage-collection callback such as JAX's), where an exception cannot propagate: the interpreter
reports it as unraisable and carries on. While :func:`handled` is active such a swallowed
:class:`Interrupted` is kept instead, and raised again at the next safe point:
:func:`raise_swallowed`, which every outermost :func:`deferred` block calls first.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

__all__ = ["Interrupted", "deferred", "handled", "install", "pending", "raise_swallowed"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_depth = 0
_pending: int | None = None
_received = False
_swallowed: int | None = None


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
    instead of raising KeyboardInterrupt in the interpreter's shutdown. Within the block an
    :class:`Interrupted` that a finaliser swallowed is kept for :func:`raise_swallowed`."""
    global _pending, _received, _swallowed
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    previous_hook = sys.unraisablehook

    def keep_swallowed(unraisable) -> None:
        global _swallowed
        if isinstance(unraisable.exc_value, Interrupted):
            _swallowed = unraisable.exc_value.signum
        else:
            previous_hook(unraisable)

    install()
    sys.unraisablehook = keep_swallowed
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        if restore_after_signal or not _received:
            for s, h in previous.items():
                signal.signal(s, h)
        _pending = None
        _received = False
        _swallowed = None


def raise_swallowed() -> None:
    """Raise (once) the :class:`Interrupted` that a finaliser swallowed, if one did: call at a
    point where the program may stop."""
    global _swallowed
    if _swallowed is not None:
        signum, _swallowed = _swallowed, None
        raise Interrupted(signum)


def pending() -> int | None:
    """The signal held by an enclosing :func:`deferred` block, if one arrived."""
    return _pending


@contextlib.contextmanager
def deferred(*, raise_at_end: bool = True) -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the duration of the block; with raise_at_end, raise the held one
    (as :class:`Interrupted`) when the outermost block ends. Without, the caller polls
    :func:`pending` and stops at a point of its choosing. An outermost block first raises a
    swallowed signal (:func:`raise_swallowed`): it is a safe point to stop at."""
    global _depth
    if not _depth:
        raise_swallowed()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if raise_at_end and not _depth and _pending is not None:
            raise Interrupted(_pending)
