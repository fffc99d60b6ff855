"""``cdcflow connector status|restart``: the state of a connector and its tasks, as Kafka Connect reports it.

A FAILED task stays failed until restarted; the restart asks Connect for the connector and its tasks in one
request (``includeTasks``), or only the failed ones (``onlyFailed``), which leaves healthy tasks streaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.stack.connect import ConnectWorker

__all__ = ["ConnectorState", "TaskState", "connector_states", "parse_status", "restart_connector"]


@dataclass(frozen=True, slots=True)
class TaskState:
    task: int
    state: str
    worker: str
    error: str  # the first line of the trace of a failed task, else ""


@dataclass(frozen=True, slots=True)
class ConnectorState:
    name: str
    state: str  # RUNNING, PAUSED, FAILED, UNASSIGNED, RESTARTING, STOPPED; MISSING when not registered
    worker: str
    tasks: tuple[TaskState, ...]
    error: str = ""

    @property
    def healthy(self) -> bool:
        return self.state == "RUNNING" and bool(self.tasks) and all(t.state == "RUNNING" for t in self.tasks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "worker": self.worker,
            "healthy": self.healthy,
            "error": self.error,
            "tasks": [{"id": t.task, "state": t.state, "worker": t.worker, "error": t.error} for t in self.tasks],
        }


def _first_line(trace: object) -> str:
    return str(trace or "").strip().split("\n", 1)[0][:300]


def parse_status(name: str, body: dict[str, Any] | None) -> ConnectorState:
    """A ConnectorState from Connect's ``/connectors/<name>/status`` body (None: the connector is missing)."""
    if body is None:
        return ConnectorState(name, "MISSING", "", ())
    connector = body.get("connector", {})
    tasks = tuple(
        TaskState(
            int(t.get("id", 0)), str(t.get("state", "")), str(t.get("worker_id", "")), _first_line(t.get("trace"))
        )
        for t in sorted(body.get("tasks", []), key=lambda t: int(t.get("id", 0)))
    )
    return ConnectorState(
        name=str(body.get("name", name)),
        state=str(connector.get("state", "")),
        worker=str(connector.get("worker_id", "")),
        tasks=tasks,
        error=_first_line(connector.get("trace")),
    )


def connector_states(worker: ConnectWorker, names: list[str] | None = None) -> list[ConnectorState]:
    """The named connectors' states, or every registered connector's."""
    return [parse_status(n, worker.connector_status(n)) for n in (names or worker.connectors())]


def restart_connector(worker: ConnectWorker, name: str, *, failed_only: bool) -> ConnectorState:
    """Restart ``name`` with its tasks (only what failed with ``failed_only``); the state Connect reports after."""
    answered = worker.request_restart(name, only_failed=failed_only)
    return parse_status(name, answered if answered is not None else worker.connector_status(name))
