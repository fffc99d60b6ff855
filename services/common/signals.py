"""Cooperative shutdown with a deadline: SIGTERM/SIGINT set a flag; a second signal escalates; sleeps wake on it.

Guarantees: once shutdown is requested and a grace period is armed (:meth:`Shutdown.arm`), the process ends
within it. The run loop gets the grace period to flush, commit and leave its group and then returns on its
own; past it, a timer thread calls the :meth:`Shutdown.on_overdue` report (what was still held), logs
``shutdown.overdue`` and ends the process with :data:`OVERDUE_EXIT` — never exit 0, so an orchestrator and an
operator can tell a clean stop from a cut one. Work not committed by then is read again by whoever owns it
next: a cut stop loses nothing, it only repeats work.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

__all__ = ["OVERDUE_EXIT", "Shutdown"]

OVERDUE_EXIT = 3
"""The exit code of a process whose shutdown did not finish within its grace period."""


class Shutdown:
    """Install with :meth:`install`; the run loop checks :attr:`requested` and sleeps with :meth:`wait`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.signal_name: str | None = None
        self._requested_at: float | None = None
        self._grace_s: float | None = None
        self._timer: threading.Timer | None = None
        self._report: Callable[[], None] | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str = "requested") -> None:
        with self._lock:
            self.signal_name = self.signal_name or reason
            if self._requested_at is None:
                self._requested_at = time.monotonic()
            self._start_deadline()
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True early when shutdown was requested."""
        return self._event.wait(seconds)

    def arm(self, grace_s: float) -> None:
        """From now on a requested shutdown must end within ``grace_s`` of the request (one already requested
        counts from its request)."""
        with self._lock:
            self._grace_s = grace_s
            self._start_deadline()

    def on_overdue(self, report: Callable[[], None]) -> None:
        """``report()`` runs on the timer thread when the grace period ends first: say what is left undone."""
        self._report = report

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._event.is_set():  # second signal: stop waiting for a clean exit
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.request(signal.Signals(signum).name)

    def _start_deadline(self) -> None:
        """Start the timer once both a request and a grace period are there (called under the lock)."""
        if self._timer is not None or self._requested_at is None or self._grace_s is None:
            return
        remaining = max(0.0, self._grace_s - (time.monotonic() - self._requested_at))
        self._timer = threading.Timer(remaining, self._expire)
        self._timer.daemon = True  # a clean stop in time exits without waiting for it
        self._timer.start()

    def _expire(self) -> None:
        from services.common.logging import get_logger  # not at import: this module loads before anything heavy

        try:
            if self._report is not None:
                self._report()
            get_logger(__name__).error(
                "shutdown.overdue", grace_s=self._grace_s, signal=self.signal_name, exit_code=OVERDUE_EXIT
            )
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(OVERDUE_EXIT)  # the loop is stuck: no clean-up may run past the deadline
