"""The sources: one PostgreSQL database each, captured by one connector file in ``connect/connectors/``.

What the loader and ``cdcflow verify`` need of every source: its topic prefix (where its lake files are), the
``source`` its contracts carry (``""`` for the primary one, under the stack's default prefix) and how to read
its database. Credentials stay ``${env:…}`` references in the files and are filled in as the Connect worker
fills them: from the stack's settings, then from this process's environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from services.common.contracts.catalog import (
    PublishingHazard,
    bounded_dsn,
    inheritance_parents,
    publishing_hazards,
    unloadable_types,
)
from services.common.contracts.errors import CatalogUnreachableError, ContractError
from services.common.debezium.values import UNAVAILABLE_VALUE
from services.common.kafka import MAX_RECORD_BYTES
from services.common.logging import get_logger
from services.common.naming import source_of
from services.common.settings import Settings
from services.common.sql import quote_qualified
from services.stack.connect import (
    ConnectWorker,
    captured,
    connector_names,
    load_connector,
    resolve_env,
    source_clashes,
)
from services.stack.errors import SourceUnreachableError, StackError
from services.stack.processes import wait_for

__all__ = [
    "FIDELITY",
    "Source",
    "capture_blockers",
    "capture_sql",
    "ensure_capture_objects",
    "new_connector",
    "reading_hazards",
    "registration",
    "registrations",
    "remove_source",
    "sources",
    "topic_prefixes",
    "unpublished_tables",
    "write_connector",
]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Source:
    connector: str  # the connector file's name
    topic_prefix: str
    source: str  # what its contracts carry: "" for the primary source
    config: dict[str, str]  # the connector's config, ${env:…} references filled in

    @property
    def publication(self) -> str:
        return self.config.get("publication.name", "")

    def dsn(self) -> str:
        """The URI of the source database, as the connector reaches it."""
        c = self.config
        user, password = quote(c.get("database.user", "")), quote(c.get("database.password", ""), safe="")
        host, port, database = (
            c.get("database.hostname", ""),
            c.get("database.port", "5432"),
            c.get("database.dbname", ""),
        )
        return f"postgresql://{user}:{password}@{host}:{port}/{quote(database)}"


def sources(settings: Settings) -> list[Source]:
    """Every connector file's source, the primary one first; none when there is no ``connect/`` folder."""
    connect_dir = settings.stack.connect_dir
    if not (connect_dir / "connectors").is_dir():
        return []
    env = {**os.environ, **settings.connector_env()}
    primary = settings.kafka.primary_prefix or settings.kafka.topic_prefix
    found = []
    for name in connector_names(connect_dir):
        config = {key: resolve_env(value, env) for key, value in load_connector(connect_dir, name).items()}
        prefix = config.get("topic.prefix", "")
        found.append(Source(name, prefix, source_of(prefix, primary), config))
    return sorted(found, key=lambda s: (s.source != "", s.source, s.connector))


_UNPUBLISHED_SQL = """
select n.nspname, c.relname
  from pg_class c
  join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p') and not c.relispartition and c.relpersistence = 'p'
   and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%%'
   and exists (select from pg_publication where pubname = %(publication)s and not puballtables)
   and not exists (
       select from pg_publication_tables p
        where p.pubname = %(publication)s and p.schemaname = n.nspname and p.tablename = c.relname)
 order by 1, 2
"""


def unpublished_tables(
    dsn: str, config: dict[str, str], *, exclude: Collection[str] = (), timeout_s: float | None = None
) -> list[str]:
    """``schema.table`` of every table the connector's lists take (but ``exclude``) that its filtered
    publication lacks: a table created, or dropped and created again, after the connector made the publication
    is not in it, and none of its changes reach Kafka. A partitioned table counts by its root; none when the
    publication publishes all tables or does not exist yet."""
    publication = config.get("publication.name", "")
    with psycopg.connect(dsn if timeout_s is None else bounded_dsn(dsn, timeout_s), autocommit=True) as conn:
        rows = conn.execute(_UNPUBLISHED_SQL, {"publication": publication}).fetchall()
    tables = [f"{schema}.{table}" for schema, table in rows]
    return [t for t in tables if t not in exclude and captured(config, t)]


@contextlib.contextmanager
def reading_source_tables() -> Iterator[None]:
    """The source database's catalog refusing a query as a :class:`StackError` saying so; out of reach, as a
    :class:`SourceUnreachableError`."""
    try:
        yield
    except CatalogUnreachableError as exc:
        raise SourceUnreachableError(f"cannot read the source database's tables: {exc}") from None
    except ContractError as exc:
        raise StackError(f"cannot read the source database's tables: {exc}") from None


def unpublishable_tables(dsn: str, config: dict[str, str], *, timeout_s: float = 10.0) -> dict[str, PublishingHazard]:
    """Each table the connector's lists take that must not join its publication as it is, with what that would do
    and the remedy (:func:`~services.common.contracts.catalog.publishing_hazards`). Debezium's filtered
    publication takes every table its lists take whenever the connector starts."""
    with reading_source_tables():
        hazards = publishing_hazards(dsn, timeout_s=timeout_s)
    return {table: hazard for table, hazard in hazards.items() if captured(config, table)}


def capture_blockers(dsn: str, config: dict[str, str], *, timeout_s: float = 10.0) -> list[str]:
    """Why the connector of ``config`` must not start on the database of ``dsn`` as it is, with the remedies: each
    type of the database Debezium fails on (:func:`~services.common.contracts.catalog.unloadable_types`), then each
    table its lists take that must not be published (:func:`unpublishable_tables`). Empty when it may."""
    with reading_source_tables():
        types = unloadable_types(dsn, timeout_s=timeout_s)
    tables = unpublishable_tables(dsn, config, timeout_s=timeout_s)
    return [*types.values(), *(hazard.why for hazard in tables.values())]


SNAPSHOT_OVERRIDES = "snapshot.select.statement.overrides"


def own_rows_overrides(dsn: str, config: dict[str, str], *, timeout_s: float = 10.0) -> dict[str, str]:
    """The connector settings that make its initial snapshot read ``ONLY`` each captured table other tables
    inherit from: Debezium's ``SELECT * FROM`` the table would read the children's rows too and send them as
    the parent's, where no later change of them ever arrives (PostgreSQL publishes those as the child's)."""
    with reading_source_tables():
        parents = [t for t in inheritance_parents(dsn, timeout_s=timeout_s) if captured(config, t)]
    listed = [t.strip() for t in config.get(SNAPSHOT_OVERRIDES, "").split(",") if t.strip()]
    added = [t for t in parents if t not in listed]  # a statement the connector has already stays
    overrides = {SNAPSHOT_OVERRIDES: ",".join([*listed, *added])} if added else {}
    for table in added:
        statement = f"SELECT * FROM ONLY {quote_qualified(table)}"  # noqa: S608 (quoted names)
        overrides[f"{SNAPSHOT_OVERRIDES}.{table}"] = statement
    return overrides


def registration(settings: Settings, source: Source, *, timeout_s: float = 10.0) -> dict[str, str]:
    """The config to register for ``source``'s connector file: the file's (``${env:…}`` references kept) with the
    snapshot overrides of :func:`own_rows_overrides` on top.

    Raises :class:`StackError` with each of :func:`capture_blockers`: a type Debezium fails on stops the source
    at its task's next start, and Debezium publishes every table its lists take whenever the task starts, so
    registering would stop the source or its application's UPDATE and DELETE. A database out of reach raises
    :class:`SourceUnreachableError`: the caller decides whether the file's config may go as it is.
    """
    dsn = source.dsn()
    if problems := reading_hazards(source.config) or capture_blockers(dsn, source.config, timeout_s=timeout_s):
        raise StackError(
            f"connector {source.connector!r} not registered: "
            + "; ".join(problems)
            + f" ({settings.stack.connect_dir / 'connectors' / source.connector}.json)"
        )
    config = load_connector(settings.stack.connect_dir, source.connector)
    config.update(own_rows_overrides(dsn, source.config, timeout_s=timeout_s))
    return config


def registrations(settings: Settings, *, timeout_s: float = 10.0) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The config to register of each connector file that may be registered (:func:`registration`), by
    connector name, and why each other may not. A source database out of reach is not checked: its file's config
    goes as it is, with a warning, as Connect's task will meet the same outage and the monitor checks its tables
    and types once it can reach them."""
    configs, refused = {}, []
    for source in sources(settings):
        try:
            configs[source.connector] = registration(settings, source, timeout_s=timeout_s)
        except SourceUnreachableError as exc:
            log.warning("source.tables_unchecked", connector=source.connector, error=str(exc))
            configs[source.connector] = load_connector(settings.stack.connect_dir, source.connector)
        except StackError as exc:
            refused.append(str(exc))
    return configs, refused


def topic_prefixes(settings: Settings) -> list[str]:
    """The stack's topic prefix, then every other source's: where the lake holds their files."""
    prefixes = [settings.kafka.primary_prefix or settings.kafka.topic_prefix]
    return prefixes + sorted({s.topic_prefix for s in sources(settings)} - set(prefixes))


# --- a new source: `cdcflow source add` ------------------------------------------------------------------

# The settings the writer reads change events by (DESIGN.md, "Sources"; README, "Types"), each with the value it
# reads and the one Debezium takes when a connector file leaves it out: a partitioned table arrives as its parent,
# bytea as bytes, NUMERIC exact, timestamps and times in microseconds, intervals as ISO 8601 text, hstore as JSON
# and money with its two decimals, every change (truncates too) sent, and an untouched TOASTed value as the
# placeholder the writer looks for. Any other value changes what arrives, most of it silently.
_READ_BY = {
    "plugin.name": ("pgoutput", "decoderbufs"),
    "publish.via.partition.root": ("true", "false"),
    "binary.handling.mode": ("bytes", "bytes"),
    "decimal.handling.mode": ("precise", "precise"),
    "time.precision.mode": ("adaptive_time_microseconds", "adaptive"),
    "interval.handling.mode": ("string", "numeric"),
    "hstore.handling.mode": ("json", "json"),
    "money.fraction.digits": ("2", "2"),
    "skipped.operations": ("none", "t"),
    "unavailable.value.placeholder": (UNAVAILABLE_VALUE, UNAVAILABLE_VALUE),
}
# Settings that change the values or the shape of the change events (masked or cut columns, single message
# transforms, custom converters) whatever they say: set at all, they are a hazard.
_RESHAPING_PREFIXES = ("column.mask.", "column.truncate.to.")
_RESHAPING = frozenset({"transforms", "converters"})
# ... and each side's converter by: a NULL stays NULL, not the column's default (Debezium puts a column's default
# in the event's schema, and a converter that reads the value through it writes the default in a NULL's place);
# for JsonConverter, decimals as JSON numbers.
_JSON_CONVERTER_READ_BY = {"replace.null.with.default": ("false", "true"), "decimal.format": ("NUMERIC", "BASE64")}
_JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
_CONVERTERS_READ_BY = {
    _JSON_CONVERTER: _JSON_CONVERTER_READ_BY,
    "io.confluent.connect.avro.AvroConverter": {"ignore.default.for.nullables": ("true", "false")},
}
# Converters that write a NULL as the column's default with no setting to keep it.
_NULLS_AS_DEFAULTS = {
    "io.apicurio.registry.utils.converter.AvroConverter": "Apicurio's AvroConverter (its Avro conversion has no "
    "ignore.default.for.nullables)",
}
# What keeps the warehouse equal to the source, set on every new source whatever the template says: the above,
# a filtered publication, and the heartbeat that keeps an idle source's slot moving.
FIDELITY = {
    **{key: value for key, (value, _) in _READ_BY.items()},
    **{f"{side}.{key}": value for side in ("key.converter", "value.converter")
       for key, (value, _) in _JSON_CONVERTER_READ_BY.items()},
    "publication.autocreate.mode": "filtered",
    "heartbeat.interval.ms": "10000",
}  # fmt: skip


def reading_hazards(config: dict[str, str]) -> list[str]:
    """Each setting of a connector's ``config`` by which its change events would arrive other than the writer
    reads them (:data:`_READ_BY`); a value left to Connect's environment (``${env:…}``) is not judged."""
    wanted = dict(_READ_BY)
    hazards = []
    for side in ("key.converter", "value.converter"):
        converter = config.get(side, "").strip()
        wanted.update({f"{side}.{key}": pair for key, pair in _CONVERTERS_READ_BY.get(converter, {}).items()})
        if why := _converter_hazard(side, converter):
            hazards.append(why)
    for key, (value, default) in wanted.items():
        given = config.get(key)
        if given is not None and "${" in given:
            continue
        if (given if given is not None else default).strip().lower() != value.lower():
            now = repr(given) if given is not None else f"left out, so its default {default!r}"
            hazards.append(f"{key} is {now}: cdcflow reads change events made with {value!r}")
    hazards.extend(
        f"{key} is set: it changes the change events cdcflow reads (their values or their shape)"
        for key, given in config.items()
        if (key in _RESHAPING or key.startswith(_RESHAPING_PREFIXES)) and given.strip()
    )
    return hazards


def _converter_hazard(side: str, converter: str) -> str | None:
    """Why a side's converter class makes events the writer does not read as they were, or None (a converter
    left to the worker, or to Connect's environment, is not judged)."""
    if converter in _NULLS_AS_DEFAULTS:
        return (
            f"{side} is {_NULLS_AS_DEFAULTS[converter]}: it writes a NULL of a column that has a default as that "
            "default; use JsonConverter, or Confluent's AvroConverter with ignore.default.for.nullables=true"
        )
    if side == "value.converter" and converter and "${" not in converter and converter not in _CONVERTERS_READ_BY:
        return f"{side} is {converter!r}: cdcflow reads values written by {' or '.join(_CONVERTERS_READ_BY)}"
    return None  # the writer never reads a key: any key converter will do


# Records a new source's connector must carry at least (services.common.kafka.MAX_RECORD_BYTES): a larger
# limit in the template stays, a smaller one would fail the task on the first large row.
RECORD_SIZE_KEYS = ("producer.override.max.request.size", "topic.creation.default.max.message.bytes")
_SOURCE_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")  # plain: its tables' names stay readable
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*")


def new_connector(settings: Settings, name: str, dsn: str, tables: Sequence[str] = ()) -> dict[str, Any]:
    """The connector document of a new source ``name`` (also its topic prefix) reading the database of ``dsn``.

    The primary source's connector file is the template (converters, snapshot, type handling), with
    :data:`FIDELITY` on top, records of at least ``MAX_RECORD_BYTES`` (:data:`RECORD_SIZE_KEYS`), and the
    source's own database, topic prefix, slot and publication. A password is never written: the stack's own
    PostgreSQL and user reuse the stack's ``${env:…}`` references, any other database reads
    ``CDCFLOW_SOURCE_<NAME>_PASSWORD`` from the Connect worker's environment.
    """
    if not _SOURCE_NAME.fullmatch(name) or len(name) > 40:
        raise StackError(f"source name {name!r}: lower-case letters and digits, runs joined by single '_'")
    primary = settings.kafka.primary_prefix or settings.kafka.topic_prefix
    if name == primary:
        raise StackError(f"{name!r} is the stack's own topic prefix: pick another name for the source")
    bad = [t for t in tables if not _TABLE.fullmatch(t)]
    if bad:
        raise StackError(f"--tables takes schema.table names: {bad}")
    template = load_connector(settings.stack.connect_dir, settings.connect.connector)
    config = {**template, **FIDELITY, **_database(settings, name, dsn)}
    for key in RECORD_SIZE_KEYS:
        config[key] = str(max(int(template.get(key, 0)), MAX_RECORD_BYTES))
    config.update({"topic.prefix": name, "slot.name": f"cdcflow_{name}", "publication.name": f"cdcflow_{name}"})
    if "notification.sink.topic.name" in config:  # `cdcflow backfill status` reads each source's own
        config["notification.sink.topic.name"] = f"_cdcflow.notifications.{name}"
    config.pop("schema.include.list", None)
    config.pop("table.include.list", None)
    if tables:
        schemas = sorted({t.split(".", 1)[0] for t in tables} | {"cdcflow"})
        config["schema.include.list"] = ",".join(schemas)
        config["table.include.list"] = ",".join([*(re.escape(t) for t in tables), r"cdcflow\.heartbeat"])
    return {"name": name, "config": config}


def _database(settings: Settings, name: str, dsn: str) -> dict[str, str]:
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise StackError(f"--dsn is not a PostgreSQL connection string: {exc}") from None
    pg = settings.postgres
    host, port, user = str(parts.get("host", "")), str(parts.get("port", "5432")), str(parts.get("user", ""))
    database = str(parts.get("dbname", ""))
    if not (host and user and database):
        raise StackError("--dsn must name the host, the user and the database (postgresql://user@host:port/db)")
    if host in (pg.host, "localhost", "127.0.0.1") and port == str(pg.port) and user == pg.user:
        return {
            "database.hostname": "${env:CDCFLOW_POSTGRES__HOST}",
            "database.port": "${env:CDCFLOW_POSTGRES__PORT}",
            "database.user": "${env:CDCFLOW_POSTGRES__USER}",
            "database.password": "${env:CDCFLOW_POSTGRES__PASSWORD}",
            "database.dbname": database,
        }
    return {
        "database.hostname": host,
        "database.port": port,
        "database.user": user,
        "database.password": f"${{env:CDCFLOW_SOURCE_{name.upper()}_PASSWORD}}",
        "database.dbname": database,
    }


def write_connector(settings: Settings, document: dict[str, Any]) -> Path:
    """``connect/connectors/<name>.json``; refused when that source exists or would share a slot, publication
    or topic prefix with another."""
    connect_dir = settings.stack.connect_dir
    name = str(document["name"])
    path = connect_dir / "connectors" / f"{name}.json"
    if path.exists():
        raise StackError(f"{path} exists: source {name!r} is already defined")
    configs = {n: load_connector(connect_dir, n) for n in connector_names(connect_dir)}
    clashes = source_clashes({**configs, name: document["config"]}, {**os.environ, **settings.connector_env()})
    if clashes:
        raise StackError("; ".join(clashes))
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def capture_sql() -> str:
    """What cdcflow keeps in every captured database (``capture.sql``): the heartbeat table that moves an idle
    source's slot on, the signal table of backfills, and the guard that opens a snapshot chunk's window only
    once the transactions committing meanwhile are visible."""
    return files("services.stack").joinpath("capture.sql").read_text(encoding="utf-8")


def ensure_capture_objects(dsn: str) -> None:
    """Apply :func:`capture_sql` to the source database of ``dsn``."""
    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
            conn.execute(capture_sql().encode())
    except psycopg.Error as exc:
        raise StackError(
            f"cannot create cdcflow's tables in the source database ({exc}); run this as its owner:\n{capture_sql()}"
        ) from None


def remove_source(settings: Settings, name: str, *, timeout_s: float = 60.0) -> list[str]:
    """Unregister source ``name``, drop its slot and publication, delete its connector file; what was done.

    Its topics, lake files and warehouse tables stay: they are data, removed by their own retention.
    """
    found = next((s for s in sources(settings) if s.connector == name), None)
    if found is None:
        raise StackError(f"no connector file connect/connectors/{name}.json")
    if not found.source:
        raise StackError(f"{name!r} is the primary source: `cdcflow stack down` stops it")
    done = []
    worker = ConnectWorker(settings)
    if worker.healthy() and worker.delete(name):
        done.append(f"connector {name} unregistered")
    slot = found.config.get("slot.name", "")
    with psycopg.connect(found.dsn(), autocommit=True, connect_timeout=10) as conn:

        def released() -> bool:
            row = conn.execute("select active from pg_replication_slots where slot_name = %s", (slot,)).fetchone()
            return row is None or not row[0]

        wait_for(f"slot {slot} to be released", released, timeout_s)
        dropped = conn.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s", (slot,)
        ).fetchone()
        if dropped is not None:
            done.append(f"slot {slot} dropped")
        if found.publication:
            conn.execute(sql.SQL("drop publication if exists {}").format(sql.Identifier(found.publication)))
            done.append(f"publication {found.publication} dropped")
    (settings.stack.connect_dir / "connectors" / f"{name}.json").unlink()
    done.append(f"connect/connectors/{name}.json deleted")
    return done
