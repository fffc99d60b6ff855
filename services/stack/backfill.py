"""Backfills without a restart: Debezium's incremental snapshots, asked for through its signal table.

``cdcflow backfill start`` inserts an ``execute-snapshot`` signal (type INCREMENTAL, ``additional-conditions``
for ``--where``) into the source database's ``cdcflow.debezium_signal``; the connector reads it from the WAL
like any change and snapshots the tables in chunks of primary keys while streaming goes on. The signal's id
is derived from the request, and the table's primary key keeps one row per id: the same request sent twice
runs one snapshot. ``status`` reads Debezium's notifications (the sink channel: a topic per connector, named
in the connector's ``notification.sink.topic.name``), whose id is the signal's id. ``stop`` inserts a
``stop-snapshot`` signal.

How snapshot reads and streamed changes of one row resolve: see ``dbt/macros/silver.sql`` (an incremental
snapshot's read carries no LSN; it takes its place after the versions emitted before it in its partition).
That holds because a chunk sees every change streamed before its window: ``capture.sql``'s trigger on the
signal table holds the window open until the transactions committing meanwhile are visible.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from services.common.kafka import read_topic, topic_names
from services.common.settings import Settings
from services.common.sql import quote_qualified, quote_string
from services.stack.connect import captured, load_connector, resolve_env
from services.stack.errors import StackError

__all__ = [
    "SIGNAL_TABLE",
    "WINDOW_GUARD",
    "SignalTarget",
    "Snapshot",
    "add_table",
    "captured",
    "check_window_guard",
    "in_order",
    "signal_id",
    "snapshot_status",
    "start_snapshot",
    "stop_snapshot",
    "target",
    "widened",
    "window_guard_problem",
    "write_connector_settings",
]

SIGNAL_TABLE = "cdcflow.debezium_signal"
WINDOW_GUARD = "settle_commits_before_window"  # capture.sql's trigger on it
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*")


@dataclass(frozen=True, slots=True)
class SignalTarget:
    connector: str
    dsn: str
    config: dict[str, str]  # the connector's config, ${env:…} references filled in

    @property
    def signal_table(self) -> str:
        return self.config.get("signal.data.collection", "")

    @property
    def notification_topic(self) -> str:
        return self.config.get("notification.sink.topic.name", "")


def target(settings: Settings, source: str | None = None) -> SignalTarget:
    """The connector to signal: ``source``'s connector file, or the primary one (``CDCFLOW_CONNECT__CONNECTOR``).

    The config is the one Connect runs when the connector is registered, else the file's.
    """
    from services.stack.sources import sources

    env = {**os.environ, **settings.connector_env()}
    if source is not None:
        found = next((s for s in sources(settings) if s.connector == source), None)
        if found is None:
            raise StackError(f"no connector file connect/connectors/{source}.json")
        name, dsn = found.connector, found.dsn()
    else:
        name, dsn = settings.connect.connector, settings.postgres.dsn()
    config = {k: resolve_env(v, env) for k, v in _config(settings, name).items()}
    if config.get("signal.data.collection") != SIGNAL_TABLE:
        raise StackError(
            f"connector {name!r} has no signal table: set signal.data.collection={SIGNAL_TABLE} and "
            f"signal.enabled.channels=source in its connector file (see connect/connectors/lending.json)"
        )
    return SignalTarget(name, dsn, config)


def _config(settings: Settings, name: str) -> dict[str, str]:
    try:
        response = httpx.get(f"{settings.connect.url}/connectors/{name}/config", timeout=10)
    except httpx.HTTPError:
        response = None
    if response is not None and response.status_code == 200:
        return {str(k): str(v) for k, v in response.json().items()}
    return load_connector(settings.stack.connect_dir, name)


def signal_id(
    tables: Sequence[str], where: str | None, *, oids: Mapping[str, int] | None = None, again: bool = False
) -> str:
    """The id of an execute-snapshot request: the same tables and condition give the same id. ``oids``, each
    table's identity in PostgreSQL: a table dropped and created again under its name is another table, whose
    rows a request sent for the old one never read."""
    request = json.dumps(
        {"tables": sorted(set(tables)), "where": where or "", **({"oids": dict(sorted(oids.items()))} if oids else {})},
        sort_keys=True,
    )
    if again:
        request += f"#{time.time_ns()}"
    return "backfill-" + hashlib.sha256(request.encode()).hexdigest()[:32]


def _check_tables(signal: SignalTarget, tables: Sequence[str]) -> None:
    bad = [t for t in tables if not _TABLE.fullmatch(t)]
    if bad or not tables:
        raise StackError(f"backfill takes schema.table names: {list(bad) or 'none given'}")
    missing = [t for t in tables if not captured(signal.config, t)]
    if missing:
        raise StackError(
            f"connector {signal.connector!r} does not capture {', '.join(missing)}: "
            "add it first with `cdcflow source add-table`"
        )


def _check_keys(signal: SignalTarget, tables: Sequence[str]) -> None:
    """Each table is in the source database with a key to read it by: Debezium reads an incremental snapshot in
    chunks of its key (the primary key, else its first unique index, or the columns ``message.key.columns``
    names) and reports a table it cannot read, or that does not exist, as completed with no row."""
    from services.common.contracts.catalog import table_key
    from services.common.contracts.errors import NoPrimaryKeyError
    from services.stack.sources import reading_source_tables

    keyed = {entry.split(":", 1)[0].strip() for entry in signal.config.get("message.key.columns", "").split(";")}
    absent, keyless = [], []
    for table in tables:
        with reading_source_tables():
            try:
                if table_key(signal.dsn, table, timeout_s=10) is None:
                    absent.append(table)
            except NoPrimaryKeyError as exc:
                if not any(re.fullmatch(k, table) for k in keyed if k):
                    keyless.append(str(exc))
    if absent:
        raise StackError(f"the source database of connector {signal.connector!r} has no table {', '.join(absent)}")
    if keyless:
        raise StackError(
            "an incremental snapshot reads a table in chunks of its key and would read no row: " + "; ".join(keyless)
        )


def _check_visible(signal: SignalTarget, tables: Sequence[str]) -> None:
    """Each table shows the connector's user all its rows: Debezium reads a snapshot's chunks as that user, and
    row-level security would hide some of them without an error."""
    from services.common.contracts.catalog import publishing_hazards
    from services.stack.sources import reading_source_tables

    with reading_source_tables():
        hazards = publishing_hazards(signal.dsn, timeout_s=10)
    hidden = [hazards[t].why for t in tables if t in hazards and hazards[t].kind == "rows_hidden_by_policy"]
    if hidden:
        raise StackError("; ".join(hidden) + ". Nothing was sent")


def check_window_guard(signal: SignalTarget) -> None:
    """Refuse a snapshot the window guard would not keep from undoing streamed changes: once sent, it cannot be
    taken back, and what it undoes is silent (silver shows a row's older state)."""
    problem = window_guard_problem(signal)
    if problem:
        raise StackError(
            f"{problem} Nothing was sent; --unguarded sends it anyway (on a source where no commit can be in"
            " flight while a chunk is read, e.g. one whose writes are stopped)."
        )


def window_guard_problem(signal: SignalTarget) -> str | None:
    """What keeps the source's snapshot window guard (``capture.sql``'s trigger on the signal table) from holding
    a chunk's window until the commits streamed before it are visible; None when nothing does. Without the
    guard, a chunk can read a row as it was before a change already streamed, and undo that change."""
    try:
        with psycopg.connect(signal.dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "select p.prosecdef, pg_has_role(p.proowner, 'pg_read_all_stats', 'USAGE'), p.proowner::regrole::text"
                " from pg_trigger as t join pg_proc as p on p.oid = t.tgfoid"
                " where not t.tgisinternal and t.tgrelid = to_regclass(%s) and t.tgname = %s",
                (SIGNAL_TABLE, WINDOW_GUARD),
            ).fetchone()
    except psycopg.Error as exc:
        raise StackError(f"cannot read the source database's triggers: {exc}") from None
    apply = "Apply services/stack/capture.sql to the source database (README: Backfills and tables added later)."
    if row is None:
        return (
            f"{SIGNAL_TABLE} in the source database has no snapshot window guard: a row whose commit is streamed "
            f"while a chunk is read can be read as it was before. {apply}"
        )
    definer, sees_all, owner = row
    if not definer:
        return (
            "the source database's snapshot window guard is an older one, which sees other roles' commits only if "
            f"the connector's role may read all statistics. {apply}"
        )
    if not sees_all:
        return (
            f"the source database's snapshot window guard runs as {owner}, which cannot see other roles' sessions: "
            "a commit waiting for a synchronous standby would not hold a chunk's window. Grant pg_read_all_stats "
            f"to {owner}, or apply services/stack/capture.sql as a role that has it."
        )
    return None


def start_snapshot(
    signal: SignalTarget,
    tables: Sequence[str],
    where: str | None = None,
    *,
    again: bool = False,
    unguarded: bool = False,
) -> tuple[str, bool]:
    """Ask for an incremental snapshot of ``tables`` (rows matching ``where``); (signal id, newly sent).

    False when the same request was sent before: its snapshot ran or runs, none is added. Refused while the
    source's snapshot window guard does not hold (:func:`check_window_guard`), unless ``unguarded``.
    """
    _check_tables(signal, tables)
    _check_keys(signal, tables)
    _check_visible(signal, tables)
    if not unguarded:
        check_window_guard(signal)
    data: dict[str, Any] = {"data-collections": list(tables), "type": "INCREMENTAL"}
    conditions = _conditions(signal, tables, where)
    if conditions:
        data["additional-conditions"] = [{"data-collection": t, "filter": f} for t, f in conditions.items()]
    sid = signal_id(tables, where, oids=_oids(signal, tables), again=again)
    return sid, _insert(signal, sid, "execute-snapshot", data)


def _oids(signal: SignalTarget, tables: Sequence[str]) -> dict[str, int]:
    """Each table's oid; a table that does not exist has none."""
    try:
        with psycopg.connect(signal.dsn, autocommit=True, connect_timeout=10) as conn:
            return {
                table: int(row[0])
                for table in tables
                if (row := conn.execute("select to_regclass(%s)::oid", (quote_qualified(table),)).fetchone()) and row[0]
            }
    except psycopg.Error as exc:
        raise StackError(f"cannot read the tables' identities in the source database: {exc}") from None


def _conditions(signal: SignalTarget, tables: Sequence[str], where: str | None) -> dict[str, str]:
    """Each table's filter: ``where``, and for a table other tables inherit from, its own rows only — a query of
    it reads its children's rows too, which PostgreSQL publishes as the children's."""
    from services.common.contracts.catalog import inheritance_parents
    from services.stack.sources import reading_source_tables

    with reading_source_tables():
        parents = set(inheritance_parents(signal.dsn, timeout_s=10))
    conditions = {}
    for table in tables:
        own = f"tableoid = {quote_string(quote_qualified(table))}::regclass" if table in parents else ""
        if where and own:
            conditions[table] = f"({where}) and {own}"
        elif where or own:
            conditions[table] = where or own
    return conditions


def stop_snapshot(signal: SignalTarget, tables: Sequence[str] = ()) -> str:
    """Stop the running incremental snapshot (of ``tables`` only, when given); the stop signal's id."""
    if tables:
        _check_tables(signal, tables)
    data: dict[str, Any] = {"type": "INCREMENTAL"}
    if tables:
        data["data-collections"] = list(tables)
    sid = f"stop-{time.time_ns()}"
    _insert(signal, sid, "stop-snapshot", data)
    return sid


def _insert(signal: SignalTarget, sid: str, kind: str, data: dict[str, Any]) -> bool:
    try:
        with psycopg.connect(signal.dsn, autocommit=True, connect_timeout=10) as conn:
            inserted = conn.execute(
                "insert into cdcflow.debezium_signal (id, type, data) values (%s, %s, %s) on conflict (id) do nothing",
                (sid, kind, json.dumps(data)),
            )
            return inserted.rowcount == 1
    except psycopg.Error as exc:
        raise StackError(f"cannot write the signal to {SIGNAL_TABLE} of the source database: {exc}") from None


_RUNNING = frozenset({"STARTED", "IN_PROGRESS", "PAUSED", "RESUMED"})


@dataclass(slots=True)
class Snapshot:
    """One incremental snapshot, as its notifications tell it."""

    id: str
    state: str = "REQUESTED"  # STARTED, IN_PROGRESS, PAUSED, RESUMED, ABORTED, COMPLETED; REQUESTED: not seen yet
    tables: str = ""
    current: str = ""  # the table being read
    last_key: str = ""  # the last primary key read of it, and the highest it will read
    max_key: str = ""
    rows: dict[str, int] = field(default_factory=dict)  # rows read per finished table
    updated_ms: int = 0

    def scanned_all(self) -> bool:
        """Whether every table of the snapshot reported its scan complete (a stopped one did not)."""
        tables = [t for t in self.tables.split(",") if t]
        return bool(tables) and all(t in self.rows for t in tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "tables": self.tables,
            "current": self.current,
            "last_key": self.last_key,
            "max_key": self.max_key,
            "rows": self.rows,
            "updated_ms": self.updated_ms,
        }


def snapshot_status(settings: Settings, signal: SignalTarget) -> list[Snapshot]:
    """Every incremental snapshot of the connector, oldest first: requested ones from the signal table, their
    progress from the connector's notifications."""
    snapshots: dict[str, Snapshot] = {}
    for sid, data in _requested(signal):
        snapshots[sid] = Snapshot(sid, tables=",".join(data.get("data-collections", [])))
    for note in _notifications(settings, signal):
        apply_notification(snapshots, note)
    return sorted(snapshots.values(), key=lambda s: (s.updated_ms or 2**62, s.id))


def apply_notification(snapshots: dict[str, Snapshot], note: dict[str, Any]) -> None:
    """Fold one Debezium notification (in timestamp order) into the snapshot it is about."""
    extra = note.get("additional_data") or {}
    sid = str(note.get("id", ""))
    kind = str(note.get("type", ""))
    if kind in ("ABORTED", "COMPLETED") and sid not in snapshots:
        sid = _ended_by(snapshots, kind) or sid
    snap = snapshots.setdefault(sid, Snapshot(sid))
    snap.updated_ms = int(note.get("timestamp", 0))
    if "data_collections" in extra:
        snap.tables = str(extra["data_collections"])
    if kind == "TABLE_SCAN_COMPLETED":
        snap.rows[str(extra.get("scanned_collection", ""))] = int(extra.get("total_rows_scanned", 0))
        snap.current, snap.last_key = "", ""
    elif not (kind == "COMPLETED" and snap.state == "ABORTED"):  # a stopped snapshot also reports COMPLETED
        snap.state = kind
    if kind in ("ABORTED", "COMPLETED"):
        snap.current, snap.last_key = "", ""
    if kind == "IN_PROGRESS":
        snap.current = str(extra.get("current_collection_in_progress", ""))
        snap.last_key, snap.max_key = str(extra.get("last_processed_key", "")), str(extra.get("maximum_key", ""))


def _ended_by(snapshots: dict[str, Snapshot], kind: str) -> str | None:
    """The snapshot an ABORTED or COMPLETED of an unknown id ends, the newest of those it can end.

    Debezium names a notification by the snapshot's correlation id while it has one. A stop in the middle of a
    scan sends the stopped snapshot's COMPLETED (by its id) and then, the id cleared, the ABORTED with a random
    one — in one millisecond or in two; a stop before the snapshot has an id gives its ABORTED a random one
    too. So an ABORTED ends a running snapshot or one that COMPLETED without scanning all its tables, and a
    COMPLETED a running or just aborted one.
    """

    def ends(snap: Snapshot) -> bool:
        if snap.state in _RUNNING:
            return True
        if kind == "ABORTED":
            return snap.state == "COMPLETED" and not snap.scanned_all()
        return snap.state == "ABORTED"

    candidates = [s for s in snapshots.values() if ends(s)]
    return max(candidates, key=lambda s: s.updated_ms).id if candidates else None


def _requested(signal: SignalTarget) -> list[tuple[str, dict[str, Any]]]:
    with psycopg.connect(signal.dsn, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("select id, data from cdcflow.debezium_signal where type = 'execute-snapshot'").fetchall()
    return [(str(sid), json.loads(str(data or "{}"))) for sid, data in rows]


def _notifications(settings: Settings, signal: SignalTarget) -> list[dict[str, Any]]:
    topic = signal.notification_topic
    if not topic or topic not in topic_names(settings.kafka, topic):
        return []
    notes = []
    with _notification_reader(settings) as read:
        for message in read_topic(settings.kafka, topic).messages:
            note = read(message.value() or b"{}")
            if not isinstance(note, dict):
                continue  # not a notification: nothing to report about it
            notes.append(note)
    return in_order([note for note in notes if _of_snapshot(note, signal)])


def _of_snapshot(note: dict[str, Any], signal: SignalTarget) -> bool:
    """Whether a notification is of an incremental snapshot of ``signal``'s connector."""
    extra = note.get("additional_data") or {}
    # Debezium names the connector by its logical name, the topic prefix
    mine = extra.get("connector_name") in (signal.connector, signal.config.get("topic.prefix"))
    return bool(note.get("aggregate_type") == "Incremental Snapshot" and mine)


@contextlib.contextmanager
def _notification_reader(settings: Settings) -> Iterator[Callable[[bytes], object]]:
    """How to read a notification: the connector writes them with its value converter, so as JSON, or with the
    writer's ``avro-confluent`` format as Avro naming its schema in the registry. Whatever does not read is
    None (not a notification: nothing to report about it)."""
    w = settings.writer
    if w.value_format != "avro-confluent" or not w.schema_registry_url:
        yield _json_or_none
        return
    # here, not with the module: the Avro reader brings Arrow and NumPy, which no other command of it needs
    from services.common.debezium.avro import CONFLUENT_MAGIC, ConfluentFraming, PoisonRecordError
    from services.common.debezium.registry import SchemaRegistryClient

    with SchemaRegistryClient(w.schema_registry_url) as registry:
        framing = ConfluentFraming(registry)

        def read(value: bytes) -> object:
            if not value.startswith(CONFLUENT_MAGIC):
                return _json_or_none(value)
            try:
                return framing.read(value)
            except PoisonRecordError:
                return None

        yield read


def _json_or_none(value: bytes) -> object:
    try:
        return json.loads(value)
    except ValueError:
        return None


# Debezium's order of a snapshot's notifications; a stop's ABORTED comes before the stopped snapshot's COMPLETED
_LIFECYCLE = {"STARTED": 0, "PAUSED": 1, "RESUMED": 1, "IN_PROGRESS": 1, "TABLE_SCAN_COMPLETED": 2, "ABORTED": 3}


def in_order(notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Notifications as Debezium sent them (they are spread over the topic's partitions by their id).

    Their timestamps are in milliseconds: a snapshot stopped right after it was asked for reports STARTED,
    ABORTED and COMPLETED in one, which are then put in the order Debezium sends them.
    """
    return sorted(notes, key=lambda n: (int(n.get("timestamp", 0)), _LIFECYCLE.get(str(n.get("type")), 4)))


# --- a table more to capture: `cdcflow source add-table` ----------------------------------------------------


def add_table(
    settings: Settings, table: str, source: str | None = None, *, timeout_s: float = 120.0, unguarded: bool = False
) -> list[str]:
    """Capture ``table`` too, without restarting Connect, and snapshot its existing rows; what was done.

    Nothing changes unless the writer could take the table and publishing it keeps its UPDATE and DELETE
    working (:func:`_check_capturable`). The table joins the connector's include list and its filtered
    publication, and a captured table other tables inherit from gets a snapshot that reads ``ONLY`` it (in the
    connector file too, when it has one); the connector's task restarts (not the worker) so it reads the table's
    schema: Connect restarts it for a new config, cdcflow when the config stays as it was. Then an incremental
    snapshot copies the rows the table already holds while its changes stream.
    """
    from services.stack.connect import ConnectWorker
    from services.stack.sources import SNAPSHOT_OVERRIDES, own_rows_overrides

    if not _TABLE.fullmatch(table):
        raise StackError(f"add-table takes a schema.table name, not {table!r}")
    signal = target(settings, source)
    _check_capturable(signal, table, settings)
    if not unguarded:  # before anything changes: its snapshot would be refused after the connector changed
        check_window_guard(signal)
    raw = _config(settings, signal.connector)
    done = []
    changes: dict[str, str] = {}
    if not captured(signal.config, table):
        changes = {k: v for k, v in widened(raw, table).items() if raw.get(k) != v}
        done.append(f"{table} added to connector {signal.connector}'s include list")
    if overrides := own_rows_overrides(signal.dsn, {**raw, **changes}):
        changes.update(overrides)
        done.append(f"connector {signal.connector}'s snapshots read ONLY {overrides[SNAPSHOT_OVERRIDES]}")
    if _publish(signal, table):
        done.append(f"{table} added to publication {signal.config.get('publication.name')}")
    worker = ConnectWorker(settings)
    if changes:
        write_connector_settings(settings, signal.connector, changes)
        worker.put(signal.connector, {**raw, **changes})  # a new config restarts the task
        worker.wait_running(signal.connector, timeout_s)
    else:
        # The task learns the tables it captures when it starts: to one running since before the table was
        # created it is unknown, and Debezium ends a snapshot of an unknown table at once, COMPLETED, no row read.
        worker.restart(signal.connector, timeout_s)
        done.append(f"connector {signal.connector}'s task restarted to learn {table}")
    sid, sent = start_snapshot(target(settings, source), [table], unguarded=unguarded)
    done.append(f"incremental snapshot {sid} {'requested' if sent else 'already requested'}")
    return done


def _check_capturable(signal: SignalTarget, table: str, settings: Settings) -> None:
    """Refuses, before anything changes, a table the writer could not take (no such table, no key, a column of a
    type the connector changes), one whose publishing would make PostgreSQL refuse its UPDATE and DELETE, and any
    table while the database holds a type Debezium fails on (adding a table restarts the connector's task)."""
    from services.common.contracts.catalog import publishing_hazards, table_contract, unloadable_types
    from services.common.contracts.errors import CatalogUnreachableError, ContractError
    from services.common.contracts.reserved import warehouse_limits

    try:
        contract = table_contract(
            signal.dsn,
            table,
            exclude_columns=list(settings.writer.exclude_columns),
            warehouse=warehouse_limits(settings.warehouse.backend),
            timeout_s=10,
        )
        hazard = publishing_hazards(signal.dsn, timeout_s=10).get(table)
        types = unloadable_types(signal.dsn, timeout_s=10)
    except (CatalogUnreachableError, ContractError) as exc:
        raise StackError(f"{table} cannot be captured, nothing was changed: {exc}") from None
    if contract is None:
        raise StackError(f"the source database of connector {signal.connector!r} has no table {table}")
    if hazard:
        raise StackError(f"{hazard.why}. Nothing was changed")
    if types:
        raise StackError("; ".join(types.values()) + ". Nothing was changed: adding a table restarts the task")


def widened(config: dict[str, str], table: str) -> dict[str, str]:
    """``config`` with ``table`` in its include lists."""
    schema = table.split(".", 1)[0]
    out = dict(config)
    tables = [p.strip() for p in config.get("table.include.list", "").split(",") if p.strip()]
    if tables:
        out["table.include.list"] = ",".join([*tables, re.escape(table)])
    schemas = [p.strip() for p in config.get("schema.include.list", "").split(",") if p.strip()]
    if schemas and not any(re.fullmatch(p, schema) for p in schemas):
        out["schema.include.list"] = ",".join([*schemas, re.escape(schema)])
    return out


def write_connector_settings(settings: Settings, name: str, changes: dict[str, str]) -> None:
    """``changes`` into the connector file, which keeps what Connect runs (a connector registered without one has
    nothing to keep); its other settings stay as written, ``${env:…}`` references unresolved."""
    path = settings.stack.connect_dir / "connectors" / f"{name}.json"
    if not path.exists():
        return
    document = json.loads(path.read_text())
    document.get("config", document).update(changes)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _publish(signal: SignalTarget, table: str) -> bool:
    """Add ``table`` to the connector's publication; False when it is published already (or will be created
    by the connector)."""
    from psycopg import sql

    publication = signal.config.get("publication.name", "")
    schema, name = table.split(".", 1)
    with psycopg.connect(signal.dsn, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("select puballtables from pg_publication where pubname = %s", (publication,)).fetchone()
        if exists is None or exists[0]:
            return False
        published = conn.execute(
            "select 1 from pg_publication_tables where pubname = %s and schemaname = %s and tablename = %s",
            (publication, schema, name),
        ).fetchone()
        if published:
            return False
        statement = sql.SQL("alter publication {} add table {}.{}").format(
            sql.Identifier(publication), sql.Identifier(schema), sql.Identifier(name)
        )
        conn.execute(statement)
        return True
