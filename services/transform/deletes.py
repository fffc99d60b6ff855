"""``cdcflow backfill deletes``: delete events for the rows silver holds and the source no longer has.

A row deleted while no replication slot existed (the slot was lost past ``max_slot_wal_keep_size``, or a
failover reached a standby without it) has no delete event, and the snapshot that follows simply does not read
it: silver keeps it, ``verify`` lists it as ``extra``, and no backfill removes it. This sends the delete event
the connector would have sent, into the table's topic, where the writer, the loader and silver take it as any
other change.

What makes the delete exact is its LSN. Silver keeps a key's version of the highest LSN, so the event must come
after every change of the key already streamed and before every change to come. The keys silver holds are
compared with the source's (one snapshot, no lock); then, for the keys the source lacked, the table is locked
in SHARE mode — its writers wait, every transaction that wrote to it has ended, committed and visible — the
keys are looked up again, and the WAL's insert position is read. The deletes carry the LSN just below it, which
every change of the table streamed later exceeds (the next WAL record may start at that very position: an insert
that waited for the lock). The lock is released before anything is sent; a key back in the source by then is
left alone.

Each event carries the key in its before image (the other columns null, as with a table's default replica
identity), that LSN and the time of the lookup, and the ``cdcflow.origin`` header ``backfill-deletes``. It goes
to the partition of the key's newest version, with a tombstone after it, as Debezium sends deletes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

import psycopg

from services.common.contracts import Column, TableContract
from services.common.errors import TerminalError
from services.common.kafka import producer
from services.common.settings import Settings
from services.stack.sources import Source, sources
from services.transform.silver import model_name
from services.transform.verify import Key, PostgresSource, SilverReader, canonical_key, key_columns, open_silver

__all__ = ["ORIGIN", "DeleteError", "TableDeletes", "delete_event", "emit_deletes", "wire_value"]

ORIGIN = ("cdcflow.origin", b"backfill-deletes")
_EPOCH = dt.datetime(1970, 1, 1)  # the wall-time epoch of timestamps without time zone
_EPOCH_DAY = dt.date(1970, 1, 1)
_US = dt.timedelta(microseconds=1)


class DeleteError(TerminalError):
    """Delete events cannot be made for a table (a key of a type they cannot carry, no silver table)."""


@dataclass(slots=True)
class TableDeletes:
    """What ``backfill deletes`` found and did for one table."""

    table: str
    topic: str
    silver_rows: int = 0
    absent: int = 0  # silver's keys the source lacked at the first look
    returned: int = 0  # of those, in the source again under the lock: left alone
    sent: int = 0  # delete events sent
    lsn: int | None = None  # the LSN they carry
    first: list[Key] = field(default_factory=list)  # the first keys deleted (or to delete, with --dry-run)


def emit_deletes(
    settings: Settings, contracts: Sequence[TableContract], *, dry_run: bool = False, limit: int = 10
) -> list[TableDeletes]:
    """For each table of ``contracts``, a delete event for every key silver holds and the source lacks (only
    counted with ``dry_run``)."""
    for contract in contracts:
        _check_captured(contract)
    silver = open_silver(settings)
    others = {s.source: s for s in sources(settings) if s.source}
    results = []
    for contract in contracts:
        if not silver.exists(contract):
            raise DeleteError(f"silver.{model_name(contract)} does not exist (has `cdcflow transform` run?)")
        dsn, prefix = _source_of(settings, contract, others)
        result = TableDeletes(contract.full_name, f"{prefix}.{contract.qualified_name}")
        database = PostgresSource(dsn)
        if not database.exists(contract):
            raise DeleteError(f"the source database has no table {contract.qualified_name} (dropped?)")
        _delete_absent(settings, contract, database, silver, result, prefix=prefix, dry_run=dry_run, limit=limit)
        results.append(result)
    return results


def _source_of(settings: Settings, contract: TableContract, others: dict[str, Source]) -> tuple[str, str]:
    """The source database's DSN and the table's topic prefix."""
    if not contract.source:
        return settings.postgres.dsn(), settings.kafka.topic_prefix
    if contract.source not in others:
        raise DeleteError(f"no connector file in connect/connectors/ has topic prefix {contract.source!r}")
    found = others[contract.source]
    return found.dsn(), found.topic_prefix


def _delete_absent(
    settings: Settings,
    contract: TableContract,
    source: PostgresSource,
    silver: SilverReader,
    result: TableDeletes,
    *,
    prefix: str,
    dry_run: bool,
    limit: int,
) -> None:
    columns = key_columns(contract)
    present = source.keys(contract)
    absent: list[tuple[tuple[Any, ...], int]] = []
    for key, partition in silver.keys(contract):
        result.silver_rows += 1
        if canonical_key(columns, key) not in present:
            absent.append((key, partition))
    del present
    result.absent = len(absent)
    if dry_run or not absent:
        result.first = [canonical_key(columns, k) for k, _ in absent[:limit]]
        return
    back, lsn, at = _look_again_locked(contract, source, [k for k, _ in absent])
    gone = [(k, p) for k, p in absent if canonical_key(columns, k) not in back]
    result.returned, result.lsn = len(absent) - len(gone), lsn
    result.first = [canonical_key(columns, k) for k, _ in gone[:limit]]
    sent = _send(settings, contract, result.topic, gone, lsn=lsn, at=at, prefix=prefix, database=source.database)
    result.sent = sent


def _look_again_locked(
    contract: TableContract, source: PostgresSource, keys: Sequence[Sequence[Any]]
) -> tuple[set[Key], int, dt.datetime]:
    """Which of ``keys`` the table holds, and the LSN and time a delete of the others carries, under its lock."""
    try:
        with source.locked(contract) as table:
            back = table.present(keys)
            lsn, at = table.position()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DeleteError(
            f"{contract.qualified_name} cannot be locked in SHARE mode as this role ({exc.diag.message_primary}): "
            "PostgreSQL asks for UPDATE, DELETE or TRUNCATE on the table. Grant one to the role, or run the command "
            "as a role that has one (CDCFLOW_POSTGRES__USER and CDCFLOW_POSTGRES__PASSWORD; another source's role "
            "is its connector's database.user)."
        ) from None
    except psycopg.errors.LockNotAvailable:
        raise DeleteError(
            f"{contract.qualified_name} stayed locked by other transactions past the lock timeout; nothing was "
            "sent, run the command again"
        ) from None
    return back, lsn, at


def _send(
    settings: Settings,
    contract: TableContract,
    topic: str,
    keys: Sequence[tuple[tuple[Any, ...], int]],
    *,
    lsn: int,
    at: dt.datetime,
    prefix: str,
    database: str,
) -> int:
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    client = producer(settings.kafka)

    def send(key: bytes, value: bytes | None, partition: int) -> None:
        while True:
            try:
                client.produce(
                    topic, key=key, value=value, partition=partition, headers=[ORIGIN], on_delivery=delivered
                )
            except BufferError:  # the client's queue is full: let deliveries drain it
                client.poll(1.0)
            else:
                client.poll(0)
                return

    for values, partition in keys:
        key, value = delete_event(contract, values, lsn=lsn, at=at, prefix=prefix, database=database)
        send(key, value, partition)
        send(key, None, partition)  # the tombstone, as Debezium sends after a delete
    remaining = client.flush(120)
    if remaining or failures:
        raise DeleteError(
            f"{topic}: {remaining} delete event(s) undelivered, {len(failures)} refused ({'; '.join(failures[:3])}); "
            "running the command again sends the deletes still needed"
        )
    return len(keys)


def delete_event(
    contract: TableContract, key: Sequence[Any], *, lsn: int, at: dt.datetime, prefix: str, database: str
) -> tuple[bytes, bytes]:
    """A Debezium delete event (key, value) of the row whose primary key holds ``key`` (silver's values), as the
    connector's JsonConverter without schemas writes it; ``prefix`` is the connector's topic prefix."""
    named = dict(zip(contract.primary_key, key, strict=True))
    key_json = _object((c.name, wire_value(c, named[c.name])) for c in key_columns(contract))
    before = _object((c.name, wire_value(c, named[c.name]) if c.name in named else "null") for c in contract.columns)
    at_us = (at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // _US
    source = json.dumps(
        {
            "version": "cdcflow",
            "connector": "postgresql",
            "name": prefix,
            "ts_ms": at_us // 1000,
            "ts_us": at_us,
            "snapshot": "false",
            "db": database,
            "schema": contract.schema,
            "table": contract.table,
            "txId": None,
            "lsn": lsn,
        }
    )
    value = f'{{"before":{before},"after":null,"source":{source},"op":"d","ts_ms":{int(time.time() * 1000)}}}'
    return key_json.encode(), value.encode()


def _object(members: Any) -> str:
    return "{" + ",".join(f"{json.dumps(name)}:{text}" for name, text in members) + "}"


def _check_captured(contract: TableContract) -> None:
    """A table captured from a source, whose key a delete event can carry."""
    if contract.produced_by:
        raise DeleteError(f"{contract.full_name} is produced by {contract.produced_by}, not captured from a source")
    unsupported = [c for c in key_columns(contract) if c.semantic not in _WIRE]
    if unsupported:
        names = ", ".join(f"{c.name} ({c.pg_type})" for c in unsupported)
        raise DeleteError(f"{contract.full_name}: delete events cannot carry a key column of type {names}")


def _finite(value: Any) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise DeleteError(f"{number} has no JSON number")
    return repr(number)


def _fixed(value: Decimal, scale: int) -> str:
    """Plain notation with exactly ``scale`` fraction digits, whatever the digits (the default context holds 28)."""
    with localcontext(prec=max(len(value.as_tuple().digits), 1) + scale + 2):
        return format(value.quantize(Decimal(1).scaleb(-scale)), "f")


def _micros(value: dt.datetime) -> int:
    return (value - _EPOCH) // _US


# How Debezium (the connector files' converters) spells each contract type, from the value silver returns.
_WIRE: dict[str, Callable[[Column, Any], str]] = {
    "int16": lambda _c, v: str(int(v)),
    "int32": lambda _c, v: str(int(v)),
    "int64": lambda _c, v: str(int(v)),
    "boolean": lambda _c, v: "true" if v else "false",
    "float32": lambda _c, v: _finite(v),
    "float64": lambda _c, v: _finite(v),
    "decimal": lambda c, v: _fixed(Decimal(str(v)), c.scale or 0),
    "variable_decimal": lambda _c, v: json.dumps(_variable_decimal(Decimal(str(v)))),
    "string": lambda _c, v: json.dumps(str(v), ensure_ascii=False),
    "uuid": lambda _c, v: json.dumps(str(v)),
    "date": lambda _c, v: str((v - _EPOCH_DAY).days),
    "timestamp": lambda _c, v: str(_micros(v)),
    "timestamp_millis": lambda _c, v: str(_micros(v) // 1000),
    "timestamptz": lambda _c, v: json.dumps(v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")),
    "time": lambda _c, v: str((v.hour * 3600 + v.minute * 60 + v.second) * 1_000_000 + v.microsecond),
    "bytes": lambda _c, v: json.dumps(base64.b64encode(bytes(v)).decode()),
}


def wire_value(column: Column, value: Any) -> str:
    """``value`` (as silver holds it) as JSON text, as Debezium sends the column's type to the writer."""
    if value is None:
        return "null"
    spell = _WIRE.get(column.semantic)
    if spell is None:
        raise DeleteError(f"{column.name}: delete events cannot carry a {column.pg_type} key")
    return spell(column, value)


def _variable_decimal(value: Decimal) -> dict[str, Any]:
    """Debezium's struct for an unconstrained NUMERIC: the scale and the unscaled value's two's complement."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    scale = max(0, -exponent)
    unscaled = int("".join(map(str, digits)) or "0") * (10 ** max(0, exponent)) * (-1 if sign else 1)
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return {"scale": scale, "value": base64.b64encode(raw).decode()}
