"""How a long-running command stops: the first SIGINT or SIGTERM asks it to stop cleanly; a
second one, or a stop that overruns its bound, ends the process at once.

Ending the process at once is safe for eventfold's own work: every batch and checkpoint
commits whole or not at all, so what was committed stays and nothing is half-applied.
The forced exit runs from a plain signal handler or a timer thread, so it works even
while a handler blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["FORCED_EXIT", "GracefulStop"]

FORCED_EXIT = 3
"""The exit status of a process that did not stop in time and was ended at once."""

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _say(line: str) -> None:
    # os.write: safe from a signal handler or a thread while the loop holds the console.
    with contextlib.suppress(OSError):
        os.write(2, f"error: {line}\n".encode(errors="replace"))


class GracefulStop:
    """Signal handling for one long-running command.

    ``requested`` is set by the first signal; `begin` (called by the command when it
    starts to stop, for whatever reason) arms a timer that ends the process after
    ``bound`` seconds, naming ``what`` and whatever ``still_running`` reports.
    """

    def __init__(
        self, what: str, bound: float, still_running: Callable[[], str] = lambda: ""
    ) -> None:
        self.what = what
        self.bound = bound
        self.still_running = still_running
        self.requested = asyncio.Event()
        self.signal: signal.Signals | None = None
        """The signal that asked for the stop, if one came."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None
        # Taken before the loop runs: asyncio.run puts a handler of its own on SIGINT.
        self._previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (call on the running loop, from the main thread).

        Plain handlers, not the loop's: they run between two bytecodes of the main
        thread, so the timer is armed and a second signal works even while a handler
        blocks the loop.
        """
        self._loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: leave them be
                signal.signal(sig, self._on_signal)

    def begin(self) -> None:
        """The command is stopping: end the process if that takes longer than the bound."""
        if self._timer is None:
            self._timer = threading.Timer(self.bound, self._overrun)
            self._timer.daemon = True
            self._timer.start()

    def finish(self) -> None:
        """The command stopped: disarm the timer and give the signals back."""
        if self._timer is not None:
            self._timer.cancel()
        for sig, previous in self._previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, previous)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            _say(f"{self.what} stopped at once by a second {signal.Signals(signum).name}")
            os._exit(128 + signum)
        self.signal = signal.Signals(signum)
        self.begin()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.requested.set)

    def _overrun(self) -> None:
        running = self.still_running()
        _say(
            f"{self.what} did not stop within {self.bound:g} s"
            + (f" ({running} still running)" if running else "")
            + "; ended it at once (committed work stays; raise --stop-timeout if it needs longer)"
        )
        os._exit(FORCED_EXIT)
