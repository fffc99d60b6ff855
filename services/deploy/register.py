"""Register every connector file with a Kafka Connect worker that runs elsewhere (a container, a pod).

``cdcflow stack up`` registers the connectors of the local stack it starts; ``cdcflow deploy register`` does the
same against ``CDCFLOW_CONNECT__URL`` — Compose's one-shot service runs it once Connect is healthy.
"""

from __future__ import annotations

import time

import httpx

from services.common.logging import get_logger
from services.common.settings import Settings
from services.deploy.errors import DeployError
from services.stack.connect import ConnectWorker, connector_names
from services.stack.errors import StackError
from services.stack.sources import registrations

__all__ = ["register_all"]

_log = get_logger(__name__)


def _wait_reachable(worker: ConnectWorker, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not worker.healthy():
        if time.monotonic() > deadline:
            raise DeployError(f"Kafka Connect at {worker.url} had no Debezium plugin after {timeout_s:.0f}s")
        time.sleep(1.0)


def _wait_running(worker: ConnectWorker, name: str, timeout_s: float) -> None:
    """The connector and every task RUNNING; a FAILED task ends the wait at once with its trace."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = worker.connector_status(name) or {}
        tasks = status.get("tasks", [])
        failed = [t for t in tasks if t.get("state") == "FAILED"]
        if failed:
            raise DeployError(f"connector {name!r}: a task failed: {str(failed[0].get('trace', ''))[:2000]}")
        if (
            status.get("connector", {}).get("state") == "RUNNING"
            and tasks
            and all(t.get("state") == "RUNNING" for t in tasks)
        ):
            return
        if time.monotonic() > deadline:
            raise DeployError(f"connector {name!r} was not running after {timeout_s:.0f}s: {status}")
        time.sleep(1.0)


def register_all(settings: Settings, timeout_s: float) -> list[str]:
    """PUT each ``connect/connectors/<name>.json`` (idempotent) and wait until each runs; the names. A connector
    whose source must not be captured as it is is not registered, the others are, then a :class:`DeployError`
    says why (:func:`~services.stack.sources.registrations`)."""
    names = connector_names(settings.stack.connect_dir)
    if not names:
        raise DeployError(f"no connector files in {settings.stack.connect_dir / 'connectors'}")
    worker = ConnectWorker(settings)
    _wait_reachable(worker, timeout_s)
    configs, refused = registrations(settings)
    for name, config in configs.items():
        try:
            worker.put(name, config)
        except (httpx.HTTPError, StackError) as exc:
            raise DeployError(f"connector {name!r} could not be registered at {worker.url}: {exc}") from None
        _wait_running(worker, name, timeout_s)
        _log.info("deploy.connector_running", connector=name, url=worker.url)
    if refused:
        raise DeployError("; ".join(refused))
    return list(configs)
