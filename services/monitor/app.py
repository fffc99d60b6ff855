"""``cdcflow monitor``'s loop: every probe polls on its own thread, every ``interval_s``.

A probe is one source of truth (Kafka, PostgreSQL, Connect, the warehouse, the transform's record, the DLQ).
Each runs on a thread of its own, so one that fails or hangs until its timeout never delays or stops the
others; after every poll ``cdcflow_monitor_probe_up{probe}`` says whether it succeeded and
``cdcflow_monitor_probe_duration_seconds{probe}`` how long it took. A failed probe leaves its other series as
they were (stale, not zero) and tries again at its next poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

from services.common.logging import get_logger
from services.common.metrics import MonitorMetrics
from services.common.signals import Shutdown

__all__ = ["Monitor", "Probe"]

log = get_logger(__name__)

_JOIN_TIMEOUT_S = 30.0


class Probe(Protocol):
    """One source the monitor polls: ``poll`` sets its gauges or raises."""

    @property
    def name(self) -> str: ...

    def poll(self) -> None: ...

    def close(self) -> None: ...


class Monitor:
    def __init__(
        self, probes: Sequence[Probe], metrics: MonitorMetrics, shutdown: Shutdown, *, interval_s: float
    ) -> None:
        self._probes = list(probes)
        self._metrics = metrics
        self._shutdown = shutdown
        self._interval_s = interval_s
        self._last_poll: dict[str, float] = {}
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._failing: set[str] = set()

    def run(self) -> int:
        self._started = time.monotonic()
        threads = [
            threading.Thread(target=self._loop, args=(probe,), name=f"monitor-{probe.name}", daemon=True)
            for probe in self._probes
        ]
        for thread in threads:
            thread.start()
        log.info("monitor.started", probes=[p.name for p in self._probes], interval_s=self._interval_s)
        while not self._shutdown.wait(1.0):
            pass
        for thread in threads:
            thread.join(_JOIN_TIMEOUT_S)
        log.info("monitor.stopped")
        return 0

    def poll(self, probe: Probe) -> bool:
        """One poll of one probe; True when it succeeded."""
        began = time.monotonic()
        try:
            probe.poll()
            ok = True
        except Exception as exc:
            ok = False
            # loud when a probe starts failing, quiet while it goes on failing (every interval, for hours)
            report = log.debug if probe.name in self._failing else log.warning
            report("monitor.probe_failed", probe=probe.name, error=f"{type(exc).__name__}: {exc}")
        if not ok:
            self._failing.add(probe.name)
        elif probe.name in self._failing:
            self._failing.discard(probe.name)
            log.info("monitor.probe_recovered", probe=probe.name)
        self._metrics.probe_up.labels(probe.name).set(1 if ok else 0)
        self._metrics.probe_duration.labels(probe.name).set(time.monotonic() - began)
        with self._lock:
            self._last_poll[probe.name] = time.monotonic()
        return ok

    def _loop(self, probe: Probe) -> None:
        try:
            while not self._shutdown.requested:
                began = time.monotonic()
                self.poll(probe)
                if self._shutdown.wait(max(0.0, self._interval_s - (time.monotonic() - began))):
                    break
        finally:
            probe.close()

    def live(self, stalled_after_s: float) -> bool:
        """Every probe has finished a poll within ``stalled_after_s`` (a thread stuck for longer is a hang)."""
        now = time.monotonic()
        with self._lock:
            return all(now - self._last_poll.get(p.name, self._started) < stalled_after_s for p in self._probes)

    def ready(self) -> bool:
        """Every probe has finished its first poll, successful or not: the series are there to scrape."""
        with self._lock:
            return all(p.name in self._last_poll for p in self._probes)
