"""`cdcflow stack up|down|status`: the whole local runtime in dependency order."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from services.common.logging import get_logger
from services.common.settings import Settings
from services.stack.connect import ConnectWorker, load_connector
from services.stack.errors import StackError
from services.stack.jvm import ensure_jars
from services.stack.kafka import KafkaBroker
from services.stack.postgres import PostgresServer

__all__ = ["ComponentStatus", "Stack", "demo_schema_sql"]

log = get_logger(__name__)


def demo_schema_sql() -> str:
    return files("services.stack").joinpath("schema.sql").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stack:
    settings: Settings

    @property
    def postgres(self) -> PostgresServer:
        return PostgresServer(self.settings.postgres, self.settings.stack.state_dir)

    @property
    def kafka(self) -> KafkaBroker:
        return KafkaBroker(self.settings.kafka, self.settings.stack)

    @property
    def connect(self) -> ConnectWorker:
        return ConnectWorker(self.settings)

    @property
    def slot_name(self) -> str:
        return load_connector(self.settings.stack.connect_dir, self.settings.connect.connector)["slot.name"]

    def up(self) -> dict[str, float]:
        """Start whatever is not running, wait for health, create the schema, register the connector.

        Returns seconds spent per step. Safe to re-run: running components are left alone. PostgreSQL, Kafka
        and Connect are detached on purpose: they outlive this command and run until :meth:`down`.
        """
        timeout = self.settings.stack.start_timeout_s
        timings: dict[str, float] = {}

        def step(name: str, action: Any) -> None:
            began = time.monotonic()
            action()
            timings[name] = round(time.monotonic() - began, 2)
            log.info("stack.step", step=name, seconds=timings[name])

        for folder in ("run", "logs"):
            (self.settings.stack.state_dir / folder).mkdir(parents=True, exist_ok=True)
        step("jars", lambda: ensure_jars(self.settings.stack.connect_dir))
        step("postgres", lambda: self.postgres.start(timeout))
        step("schema", lambda: self.postgres.apply_sql(demo_schema_sql()))
        step("kafka", lambda: self.kafka.start(timeout))
        step("connect", lambda: self.connect.start(timeout))
        step("connector", lambda: self._start_connector(timeout))
        return timings

    def _start_connector(self, timeout_s: float) -> None:
        name = self.settings.connect.connector
        self.connect.register(name)
        self.connect.wait_running(name, timeout_s)

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop everything this stack started, by PID, and drop the replication slot.

        Connect stops first so the slot is inactive and can be dropped; PostgreSQL stops last.
        """
        stopped: list[str] = []
        if self.connect.stop():
            stopped.append("connect")
        if self.postgres.running():
            self._drop_slot()
        if self.kafka.stop():
            stopped.append("kafka")
        if self.postgres.stop():
            stopped.append("postgres")
        if purge:
            shutil.rmtree(self.settings.stack.state_dir, ignore_errors=True)
            shutil.rmtree(self.postgres.root.parent, ignore_errors=True)
        return stopped

    def _drop_slot(self) -> None:
        try:
            if self.postgres.drop_slot(self.slot_name):
                log.info("stack.slot_dropped", slot=self.slot_name)
        except Exception as exc:  # the stack must still come down
            log.warning("stack.slot_drop_failed", slot=self.slot_name, error=str(exc))

    def status(self) -> list[ComponentStatus]:
        pg, kafka, connect = self.postgres, self.kafka, self.connect
        pg_running = pg.running()
        connector = connect.connector_status(self.settings.connect.connector)
        slots = dict(pg.slots()) if pg_running and pg.healthy() else {}
        return [
            ComponentStatus(
                "postgres",
                pg_running,
                pg_running and pg.healthy(),
                pg.pid(),
                {"data_dir": str(pg.data_dir), "replication_slots": slots},
            ),
            ComponentStatus("kafka", kafka.process.running(), kafka.healthy(), kafka.process.pid()),
            ComponentStatus("connect", connect.process.running(), connect.healthy(), connect.process.pid()),
            ComponentStatus(
                f"connector:{self.settings.connect.connector}",
                connector is not None,
                _connector_running(connector),
                None,
                {"status": connector} if connector else {},
            ),
        ]

    def endpoints(self) -> dict[str, str]:
        """How scripts reach each part of the stack (the password is not included)."""
        return {
            "postgres_dsn": self.settings.postgres.dsn(with_password=False),
            "kafka_bootstrap_servers": self.settings.kafka.bootstrap_servers,
            "connect_url": self.settings.connect.url,
            "topic_prefix": self.settings.kafka.topic_prefix,
            "lake_root": self.settings.lake_root(),
            "warehouse_path": str(self.settings.duckdb_path()),
            "state_dir": str(self.settings.stack.state_dir),
            "logs": str(self.settings.stack.state_dir / "logs"),
        }

    def log_files(self) -> dict[str, str]:
        return {
            "postgres": str(self.postgres.log_file),
            "kafka": str(self.kafka.process.log_file),
            "connect": str(self.connect.process.log_file),
        }


def _connector_running(status: dict[str, Any] | None) -> bool:
    if not status:
        return False
    tasks = status.get("tasks", [])
    return (
        status.get("connector", {}).get("state") == "RUNNING"
        and bool(tasks)
        and all(t.get("state") == "RUNNING" for t in tasks)
    )


def require_healthy(stack: Stack) -> None:
    unhealthy = [c.name for c in stack.status() if not c.healthy]
    if unhealthy:
        raise StackError(f"the local stack is not healthy: {', '.join(unhealthy)}; run `cdcflow stack up`")
