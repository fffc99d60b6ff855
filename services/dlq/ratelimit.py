"""Pacing for ``--rate``: the n-th record goes no earlier than ``n / rate`` seconds after the first."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Pacer", "batch_size"]


def batch_size(rate: float | None, *, per_second: float = 5.0, most: int = 500) -> int:
    """Records per transaction: about ``per_second`` transactions a second at ``rate``, at least 1."""
    if rate is None:
        return most
    return max(1, min(most, int(rate / per_second)))


class Pacer:
    """A schedule, not a bucket: after ``take(n)`` returns for a total of N records, at least ``(N - n_first) /
    rate`` seconds have passed since the first call, so over any run the rate never exceeds ``rate`` by more
    than one batch."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def take(self, records: int) -> float:
        """Wait until ``records`` more may go; returns the seconds waited."""
        if self._rate is None or records <= 0:
            return 0.0
        now = self._clock()
        start = now if self._next is None else max(now, self._next)
        waited = start - now
        if waited > 0:
            self._sleep(waited)
        self._next = start + records / self._rate
        return waited
