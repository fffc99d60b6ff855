"""Cooperative shutdown: SIGTERM/SIGINT set a flag; a second signal escalates; sleeps wake on it."""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["Shutdown"]


class Shutdown:
    """Install with :meth:`install`; the run loop checks :attr:`requested` and sleeps with :meth:`wait`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str = "requested") -> None:
        self.signal_name = self.signal_name or reason
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True early when shutdown was requested."""
        return self._event.wait(seconds)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._event.is_set():  # second signal: stop waiting for a clean exit
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.request(signal.Signals(signum).name)
