"""Connector and task state from the Kafka Connect REST API.

The connectors are those Connect runs *and* those the repository defines (one file per source in
``connect/connectors/``): a source whose connector was never registered, or was deleted, is down, not absent.
While Connect cannot be reached every known connector is down too, and the probe fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from services.common.metrics import MonitorMetrics

__all__ = ["ConnectorProbe"]

_RUNNING = "RUNNING"


class ConnectorProbe:
    name = "connect"

    def __init__(
        self, url: str, metrics: MonitorMetrics, *, defined: Callable[[], list[str]], timeout_s: float
    ) -> None:
        self._url = url.rstrip("/")
        self._metrics = metrics
        self._defined = defined
        self._timeout_s = timeout_s
        self._tasks: dict[str, set[str]] = {}

    def close(self) -> None:
        """Each poll is one request on its own connection."""

    def poll(self) -> None:
        try:
            response = httpx.get(f"{self._url}/connectors", params={"expand": "status"}, timeout=self._timeout_s)
            response.raise_for_status()
            running: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError):
            self._all_down()
            raise
        for name in sorted(set(running) | set(self._defined()) | set(self._tasks)):
            self._report(name, (running.get(name) or {}).get("status") or {})

    def _report(self, name: str, status: dict[str, Any]) -> None:
        state = (status.get("connector") or {}).get("state")
        self._metrics.connector_up.labels(name).set(1 if state == _RUNNING else 0)
        tasks = {str(t.get("id")): t.get("state") for t in status.get("tasks") or []}
        for task, task_state in tasks.items():
            self._metrics.connector_task_running.labels(name, task).set(1 if task_state == _RUNNING else 0)
        for gone in self._tasks.get(name, set()) - set(tasks):
            self._metrics.connector_task_running.remove(name, gone)  # fewer tasks now: not a failed one
        self._tasks[name] = set(tasks)

    def _all_down(self) -> None:
        for name in sorted(set(self._defined()) | set(self._tasks)):
            self._metrics.connector_up.labels(name).set(0)
            for task in self._tasks.get(name, set()):
                self._metrics.connector_task_running.labels(name, task).set(0)
