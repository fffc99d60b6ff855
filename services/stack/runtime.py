"""`cdcflow stack up|down|status`: the whole local runtime in dependency order."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from services.common.logging import get_logger
from services.common.settings import Settings
from services.stack.connect import ConnectWorker, connector_names, load_connector, resolve_env, source_clashes
from services.stack.errors import StackError
from services.stack.jvm import ensure_jars
from services.stack.kafka import KafkaBroker
from services.stack.postgres import PostgresServer

__all__ = ["DEMO_SQL_FILES", "ComponentStatus", "Stack", "demo_schema_sql"]

log = get_logger(__name__)


# The demo source's database: what cdcflow keeps in any captured database, then the lending schema.
DEMO_SQL_FILES = ("capture.sql", "schema.sql")


def demo_schema_sql() -> str:
    package = files("services.stack")
    return "\n".join(package.joinpath(name).read_text(encoding="utf-8") for name in DEMO_SQL_FILES)


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

    def sources(self) -> dict[str, dict[str, str]]:
        """Each source's connector config (``connect/connectors/<name>.json``), by connector name."""
        connect_dir = self.settings.stack.connect_dir
        return {name: load_connector(connect_dir, name) for name in connector_names(connect_dir)}

    def _local_slots(self) -> list[tuple[str, str]]:
        """``(slot, database)`` of every source captured from the stack's own PostgreSQL."""
        env, pg = self.settings.connector_env(), self.settings.postgres
        local = []
        for config in self.sources().values():
            host, port = (resolve_env(config.get(k, ""), env) for k in ("database.hostname", "database.port"))
            if host in (pg.host, "localhost", "127.0.0.1") and port == str(pg.port) and "slot.name" in config:
                local.append((resolve_env(config["slot.name"], env), resolve_env(config["database.dbname"], env)))
        return local

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
        step("catalog role", self.postgres.ensure_catalog_role)
        step("kafka", lambda: self.kafka.start(timeout))
        step("connect", lambda: self.connect.start(timeout))
        step("connector", lambda: self._start_connector(timeout))
        return timings

    def _start_connector(self, timeout_s: float) -> None:
        """Register every source's connector (a re-run updates their configs) and wait until they run. One whose
        source must not be captured as it is stays unregistered (the others are) and the step fails saying why
        (:func:`~services.stack.sources.registrations`)."""
        from services.stack.sources import registrations

        clashes = source_clashes(self.sources(), self.settings.connector_env())
        if clashes:
            raise StackError("; ".join(clashes) + ": give each source its own (connect/connectors/*.json)")
        configs, refused = registrations(self.settings)
        for name, config in configs.items():
            self.connect.put(name, config)
        for name in configs:
            self.connect.wait_running(name, timeout_s)
        if refused:
            raise StackError("; ".join(refused))

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop everything this stack started, by PID, and drop the replication slot of every source on the
        stack's PostgreSQL (a source on another server keeps its slot: the connector resumes from it).

        Connect stops first so the slots are inactive and can be dropped; PostgreSQL stops last.
        """
        stopped: list[str] = []
        if self.connect.stop():
            stopped.append("connect")
        if self.postgres.running():
            self._drop_slots()
        if self.kafka.stop():
            stopped.append("kafka")
        if self.postgres.stop():
            stopped.append("postgres")
        if purge:
            shutil.rmtree(self.settings.stack.state_dir, ignore_errors=True)
            shutil.rmtree(self.postgres.root.parent, ignore_errors=True)
        return stopped

    def _drop_slots(self) -> None:
        for slot, database in self._local_slots():
            try:
                if self.postgres.drop_slot(slot, database):
                    log.info("stack.slot_dropped", slot=slot, database=database)
            except Exception as exc:  # the stack must still come down
                log.warning("stack.slot_drop_failed", slot=slot, database=database, error=str(exc))

    def status(self) -> list[ComponentStatus]:
        pg, kafka, connect = self.postgres, self.kafka, self.connect
        pg_running = pg.running()
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
            ComponentStatus(
                "connect",
                connect.process.running(),
                connect.healthy(),
                connect.process.pid(),
                connect.jmx_exporter_status(),
            ),
            *(self._connector_status(name) for name in self.sources()),
        ]

    def _connector_status(self, name: str) -> ComponentStatus:
        connector = self.connect.connector_status(name)
        detail = {"status": connector} if connector else {}
        return ComponentStatus(f"connector:{name}", connector is not None, _connector_running(connector), None, detail)

    def endpoints(self) -> dict[str, str]:
        """How scripts reach each part of the stack (the password is not included)."""
        exporter = self.connect.jmx_exporter_url
        return {
            "postgres_dsn": self.settings.postgres.dsn(with_password=False),
            "kafka_bootstrap_servers": self.settings.kafka.bootstrap_servers,
            "connect_url": self.settings.connect.url,
            **({"connect_jmx_exporter": exporter} if exporter else {}),
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
