"""Stop on SIGINT or SIGTERM by raising a flag, never an exception.

A service manager stops with SIGTERM, a person with Ctrl-C, and a shell starts background
commands with SIGINT ignored; each tool must still finish what it is doing, close its port
and print its summary. Raising ``KeyboardInterrupt`` from the handler (Python's default)
cannot promise that: the exception lands wherever the main thread happens to be, before a
``try`` is entered, inside a context manager's ``__enter__`` or inside a lock (a handler that
calls ``threading.Event.set`` can deadlock on the event's own lock). The handler here only
stores the signal's name; the tool's loop reads it between steps.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Holds the name of the first stop signal received (``None`` while running)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._on_request: list[Callable[[], object]] = []

    def request(self, reason: str) -> None:
        """Ask the loop to stop (from a signal handler or from code)."""
        if self.reason is None:
            self.reason = reason
            for callback in self._on_request:
                callback()

    def on_request(self, callback: Callable[[], object]) -> None:
        """Also call ``callback`` when the stop is requested (at once if it already was), to
        cut short a wait the loop cannot check the flag in, e.g. pyserial's ``cancel_write``
        for a write blocked on a full link. It runs in the signal handler: it must take no
        lock (``cancel_write`` writes one byte to a pipe)."""
        self._on_request.append(callback)
        if self.reason is not None:
            callback()

    def __bool__(self) -> bool:
        return self.reason is not None


@contextmanager
def stop_on_signals(stop: StopRequest | None = None) -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM set ``stop`` (whatever disposition the process
    inherited, ignored included); the previous handlers come back on exit. Main thread only,
    as every Python signal handler."""
    request = stop if stop is not None else StopRequest()

    def handler(signum: int, _frame: FrameType | None) -> None:
        request.request(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, h in old.items():
            signal.signal(s, h)
