"""What the scale and snapshot benchmarks share: tables of their own, captured by a connector of their own.

A benchmark makes its change events the way production does: rows written to real PostgreSQL tables (clones
of ``lending.transactions``' shape in a schema of the benchmark's own), captured by a Debezium connector of
its own (its own topic prefix, replication slot and publication) on the stack's Kafka Connect worker. The
writer then reads them with contracts generated from the live catalog, and is measured as in
bench/writer_bench.py, plus its peak resident memory. Everything a benchmark creates (connector, slot,
publication, topics, schema) is removed on the way out.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from bench.events import committed_all, cpu_seconds, delete_topics, started_writer
from services.common.contracts import write_contract
from services.common.contracts.catalog import contracts_from_catalog
from services.common.kafka import admin_client, topic_watermarks
from services.common.replay import replay_topic
from services.common.settings import KafkaSettings, Settings
from services.consumer.dlq import dlq_topic
from services.stack.connect import ConnectWorker, load_connector

__all__ = [
    "TEMPLATE_TABLE",
    "BenchSource",
    "WriterRun",
    "bench_connector",
    "bench_source",
    "clone_tables",
    "drop_group",
    "generate_rows",
    "insert_rows_sql",
    "kib_field",
    "run_writer",
    "topics_under",
    "total_records",
    "write_contracts",
]

TEMPLATE_TABLE = "lending.transactions"
# Connector settings a benchmark source does without: no heartbeat (its topic and action query belong to
# the stack's source), no signal table, no notifications unless asked for.
_DROPPED = (
    "heartbeat.action.query",
    "signal.enabled.channels",
    "signal.data.collection",
    "notification.enabled.channels",
    "notification.sink.topic.name",
)
_INSERT_CHUNK = 50_000


def bench_connector(
    template: dict[str, str],
    *,
    prefix: str,
    schema: str,
    partitions: int,
    snapshot_mode: str,
    notification_topic: str | None = None,
) -> dict[str, str]:
    """The config of a connector capturing every table of ``schema`` under topic prefix ``prefix``.

    The stack's connector file is the template (converters, type handling: the events are those the stack's
    source sends); slot, publication and prefix are the benchmark's own, topics are created with
    ``partitions`` partitions, and with ``notification_topic`` Debezium reports its snapshot's progress there.
    """
    config = {k: v for k, v in template.items() if k not in _DROPPED}
    config.update(
        {
            "topic.prefix": prefix,
            "slot.name": prefix,
            "publication.name": prefix,
            "schema.include.list": schema,
            "table.include.list": re.escape(schema) + r"\..*",
            "snapshot.mode": snapshot_mode,
            "heartbeat.interval.ms": "0",
            "topic.creation.default.partitions": str(partitions),
        }
    )
    if notification_topic:
        config["notification.enabled.channels"] = "sink"
        config["notification.sink.topic.name"] = notification_topic
    return config


def clone_tables(schema: str, names: list[str]) -> list[sql.Composed]:
    """DDL: ``schema`` and one table per name with :data:`TEMPLATE_TABLE`'s columns, defaults, checks and
    primary key (``LIKE`` copies no foreign keys, so rows need no customers or facilities)."""
    template = sql.SQL(TEMPLATE_TABLE)
    statements = [sql.SQL("create schema {}").format(sql.Identifier(schema))]
    statements += [
        sql.SQL("create table {} (like {} including all)").format(sql.Identifier(schema, name), template)
        for name in names
    ]
    return statements


def insert_rows_sql(schema: str, table: str) -> sql.Composed:
    """An insert of the rows numbered ``%(first)s`` to ``%(last)s``, every column filled deterministically from
    the row's number: the four transaction types, an exact NUMERIC(…) amount, an unconstrained NUMERIC (NULL in
    a third of the rows), a timestamp with zone, a date and a text reference."""
    return sql.SQL(
        "insert into {} (transaction_id, facility_id, customer_id, transaction_type, amount, currency,"
        " exchange_rate, booked_at, value_date, reference) overriding system value"
        " select g, g %% 1000 + 1, g %% 5000 + 1, (array['DEPOSIT','WITHDRAWAL','DISBURSAL','PAYMENT'])[1 + g %% 4],"
        " round((g %% 100000) / 7.0 + 1, 2), 'USD',"
        " case when g %% 3 = 0 then null else round(1 + (g %% 997) / 1000.0, 6) end,"
        " timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', date '2026-01-01' + (g %% 365)::int,"
        " 'ref-' || md5(g::text)"
        " from generate_series(%(first)s::bigint, %(last)s::bigint) g"
    ).format(sql.Identifier(schema, table))


def generate_rows(conn: psycopg.Connection[tuple[object, ...]], schema: str, table: str, rows: int) -> None:
    """``rows`` rows into ``schema.table``, numbered from 1, one transaction per chunk of 50,000."""
    statement = insert_rows_sql(schema, table)
    for first in range(1, rows + 1, _INSERT_CHUNK):
        with conn.transaction():
            conn.execute(statement, {"first": first, "last": min(rows, first + _INSERT_CHUNK - 1)})


def topics_under(kafka: KafkaSettings, prefix: str) -> list[str]:
    """The topics whose name starts with ``prefix.``."""
    listed = admin_client(kafka).list_topics(timeout=30).topics
    return sorted(t for t in listed if t.startswith(prefix + "."))


def total_records(kafka: KafkaSettings, topics: list[str]) -> int:
    """The sum of the end offsets of every partition of ``topics`` (topics written once: no retention)."""
    return sum(high for topic in topics for _, high in topic_watermarks(kafka, topic).values())


def write_contracts(dsn: str, schema: str, folder: Path) -> int:
    """A contract per table of ``schema`` from the live catalog, written into ``folder``; how many."""
    contracts = contracts_from_catalog(dsn, [re.escape(schema) + r"\..*"])
    for contract in contracts:
        write_contract(folder, contract)
    return len(contracts)


class BenchSource:
    """A schema and a connector of the benchmark's own; :meth:`close` removes them, their slot, publication
    and topics."""

    def __init__(self, settings: Settings, *, prefix: str, schema: str) -> None:
        self.settings = settings
        self.prefix = prefix
        self.schema = schema
        self.worker = ConnectWorker(settings)
        self.registered = False

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.settings.postgres.dsn(), autocommit=True, connect_timeout=10)

    def create_tables(self, names: list[str]) -> None:
        with self.connect() as conn:
            for statement in clone_tables(self.schema, names):
                conn.execute(statement)

    def register(self, *, partitions: int, snapshot_mode: str, notification_topic: str | None = None) -> None:
        """Registers the connector and waits until it runs and its replication slot is active."""
        template = load_connector(self.settings.stack.connect_dir, self.settings.connect.connector)
        config = bench_connector(
            template,
            prefix=self.prefix,
            schema=self.schema,
            partitions=partitions,
            snapshot_mode=snapshot_mode,
            notification_topic=notification_topic,
        )
        self.registered = True
        self.worker.put(self.prefix, config)
        self.worker.wait_running(self.prefix, 120)

    def wait_slot_active(self, timeout_s: float = 120.0) -> None:
        """Streaming has begun once the slot is active: changes from now on are captured."""
        with self.connect() as conn:
            _wait(f"slot {self.prefix}", lambda: self._slot_active(conn), timeout_s)

    def _slot_active(self, conn: psycopg.Connection[tuple[object, ...]]) -> bool:
        """Whether the slot exists and a walsender (the connector's task) holds it."""
        row = conn.execute("select active from pg_replication_slots where slot_name = %s", (self.prefix,)).fetchone()
        return bool(row and row[0])

    def unregister(self) -> None:
        """Deletes the connector, then its slot (once released) and its publication."""
        if self.registered:
            self.worker.delete(self.prefix)
            self.registered = False
        with self.connect() as conn:
            _wait(f"slot {self.prefix} released", lambda: not self._slot_active(conn), 60)
            conn.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s",
                (self.prefix,),
            )
            conn.execute(sql.SQL("drop publication if exists {}").format(sql.Identifier(self.prefix)))

    def close(self, extra_topics: list[str] | None = None) -> None:
        """Removes the connector, slot, publication, schema, every topic under the prefix and ``extra_topics``."""
        try:
            self.unregister()
        finally:
            with self.connect() as conn:
                conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(self.schema)))
            topics = sorted({*topics_under(self.settings.kafka, self.prefix), *(extra_topics or [])})
            if topics:
                delete_topics(self.settings.kafka, topics)


def _wait(what: str, check: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def kib_field(status: str, name: str) -> int:
    """A ``kB`` field of a /proc/<pid>/status text (``VmRSS``, ``VmHWM``) in KiB; 0 when absent."""
    match = re.search(rf"^{re.escape(name)}:\s+(\d+) kB$", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _status(pid: int) -> str:
    return Path(f"/proc/{pid}/status").read_text()


@dataclass(frozen=True, slots=True)
class WriterRun:
    """One measured run of the lake writer: CPU seconds, wall seconds and resident memory in MiB."""

    cpu_s: float
    wall_s: float
    rss_at_start_mib: float  # at its ``writer.started`` line: interpreter, imports, wiring
    peak_rss_mib: float  # the kernel's high-water mark of the process's resident set (VmHWM)
    lake_files: int = 0  # Parquet files it wrote: each costs a fixed amount, whatever its rows


def run_writer(
    settings: Settings,
    *,
    prefix: str,
    ends: dict[tuple[str, int], int],
    folder: Path,
    contracts: Path,
    env: dict[str, str] | None = None,
    on_started: Callable[[], None] | None = None,
) -> WriterRun:
    """The lake writer over the topics under ``prefix`` with ``contracts``, measured from its
    ``writer.started`` log line until its group has committed ``ends`` (as bench/writer_bench.py does).

    ``on_started`` runs right after the start line (the snapshot benchmark starts its connector there);
    ``ends`` may then be filled in later by the caller, so it is read on every check.
    """
    group = f"bench-writer-{uuid.uuid4().hex[:6]}"
    lake = folder / "lake"
    lake.mkdir(parents=True, exist_ok=True)
    child_env = {
        "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
        "CDCFLOW_KAFKA__PRIMARY_PREFIX": "",
        "CDCFLOW_WRITER__GROUP_ID": group,
        "CDCFLOW_WRITER__CONTRACTS_DIR": str(contracts),
        "CDCFLOW_LAKE__ROOT": str(lake),
        "CDCFLOW_WRITER__STATE_DIR": str(folder / "writer-state"),
        **(env or {}),
    }
    log = folder / "writer.log"
    try:
        with started_writer(child_env, log) as proc:
            began, began_at = cpu_seconds(proc.pid), time.monotonic()
            at_start = kib_field(_status(proc.pid), "VmRSS")
            if on_started is not None:
                on_started()
            while not (ends and committed_all(settings.kafka, group, ends)):
                if proc.poll() is not None:
                    raise SystemExit(f"the writer exited: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            cpu, wall = cpu_seconds(proc.pid) - began, time.monotonic() - began_at
            peak = kib_field(_status(proc.pid), "VmHWM")
            return WriterRun(cpu, wall, at_start / 1024, peak / 1024, sum(1 for _ in lake.rglob("*.parquet")))
    finally:
        drop_group(settings.kafka, group)


def drop_group(kafka: KafkaSettings, group: str, timeout_s: float = 30.0) -> None:
    """Deletes what a writer's group leaves on the broker: its DLQ and replay topics and its offsets."""
    made = set(admin_client(kafka).list_topics(timeout=timeout_s).topics)
    topics = [t for t in (dlq_topic(group), replay_topic(group)) if t in made]
    if topics:
        delete_topics(kafka, topics)
    admin = admin_client(kafka)  # held until the answer: a collected client never resolves its futures
    for future in admin.delete_consumer_groups([group], request_timeout=timeout_s).values():
        future.result(timeout=timeout_s)


@contextmanager
def bench_source(settings: Settings, *, prefix: str, schema: str) -> Iterator[BenchSource]:
    """A :class:`BenchSource`, closed however the block ends."""
    source = BenchSource(settings, prefix=prefix, schema=schema)
    try:
        yield source
    finally:
        source.close()
