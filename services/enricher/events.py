"""Debezium change events as the enricher needs them: decoded into values, never raising.

A decoder returns a change or a :class:`Rejected` carrying the reason, so the DLQ branch is ordinary data
flow. Values are JSON as the connector writes it (``schemas.enable=false``; an envelope with ``schema`` and
``payload`` is unwrapped). Numbers with a fraction are kept as their text, so NUMERIC amounts keep every digit
(and cost no conversion: the enriched record carries decimals as text). JSON is read with msgspec, which
parses the raw bytes about three times as fast as ``json`` (decoding was a third of the enricher's CPU time,
BENCHMARKS.md); text that is not UTF-8, or escapes a lone surrogate, is not JSON to it: it is rejected.

``lsn`` is Debezium's ``source.lsn``: the position of the change in PostgreSQL's WAL, one order over every
table of the database (docs/architecture.md, "The enricher").
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "TABLE_ATTRIBUTES",
    "TRUNCATE",
    "Rejected",
    "TableChange",
    "TableTruncate",
    "TransactionChange",
    "decode_lsn",
    "decode_table_change",
    "decode_transaction",
]

# The attributes of each table side the enriched record carries; the rest of a row is not kept.
TABLE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "customers": ("customer_type", "status"),
    "facilities": ("status", "interest_rate"),
}
_OPS = frozenset({"c", "u", "d", "r", "t"})
TRUNCATE = "t"
"""Debezium's op of a ``TRUNCATE``: one event with no row image, on whichever partition its null key lands."""
_INT64 = range(-(2**63), 2**63)  # what the table store (msgpack) keeps as a number
_DECODER = msgspec.json.Decoder(float_hook=str)  # a float literal as its text: exact, whatever its digits


# Records are frozen msgspec Structs rather than frozen dataclasses: built per event, they cost a tenth of the
# time to construct (a frozen dataclass sets each field through object.__setattr__). ``gc=False``: they hold
# only decoded JSON values and each other, so they can be in no reference cycle for the collector to find.


class Rejected(msgspec.Struct, frozen=True, gc=False):
    """A record that cannot be used, and why (``reason`` is a short label for metrics and DLQ headers)."""

    reason: str
    detail: str


class TableChange(msgspec.Struct, frozen=True, gc=False):
    """One version of a customer or facility row: its attributes, or ``deleted``."""

    table: str
    key: str
    lsn: int
    committed_at_ms: int
    deleted: bool
    attributes: dict[str, Any]


class TableTruncate(msgspec.Struct, frozen=True, gc=False):
    """A ``TRUNCATE`` of customers or facilities: as of ``lsn`` no row of ``table`` exists until inserted again."""

    table: str
    lsn: int
    committed_at_ms: int


class TransactionChange(msgspec.Struct, frozen=True, gc=False):
    """One change of a transaction row, with where it was read (its idempotency key downstream)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    op: str
    lsn: int
    committed_at_ms: int
    tx_id: int | None
    row: dict[str, Any]  # the after image; for a delete, the before image; empty for a truncate
    # the rest of the source block the output's envelope repeats: Debezium's snapshot marker and, when the
    # connector sends it, the commit time in microseconds
    snapshot: str = "false"
    committed_at_us: int | None = None

    @property
    def customer_key(self) -> str | None:
        return _key_text(self.row.get("customer_id"))

    @property
    def facility_key(self) -> str | None:
        return _key_text(self.row.get("facility_id"))


def _key_text(value: Any) -> str | None:
    return None if value is None else str(value)


class _Source(msgspec.Struct, gc=False):
    """The members of Debezium's ``source`` block the enricher reads (the others are skipped unread)."""

    lsn: Any = None
    ts_ms: Any = None
    txId: Any = None  # noqa: N815 - Debezium's name
    snapshot: Any = None
    ts_us: Any = None


class _Envelope(msgspec.Struct, gc=False):
    """A change event as the connector writes it, its members still unchecked.

    Decoded into this shape straight from the bytes, a member the enricher does not read (``ts_ns``, the
    source's ``version``, ``db``, …) is skipped instead of becoming a Python object. ``schema`` and
    ``payload`` are only there to recognise the envelope of the JsonConverter with schemas.
    """

    op: Any = None
    source: _Source | None = None
    before: Any = None
    after: Any = None
    schema: Any = msgspec.UNSET
    payload: Any = msgspec.UNSET


_ENVELOPE = msgspec.json.Decoder(_Envelope, float_hook=str)


def _envelope(value: bytes | None) -> _Envelope | Rejected:
    if value is None:
        return Rejected("tombstone", "a null value")
    try:
        envelope: _Envelope | None = _ENVELOPE.decode(value)
    except msgspec.ValidationError:
        envelope = None  # JSON of another shape: read generically below, which says what is wrong with it
    except msgspec.DecodeError as exc:
        return Rejected("not_json", str(exc))
    except RecursionError:
        return _too_deep()
    if envelope is None or (envelope.schema is not msgspec.UNSET and envelope.payload is not msgspec.UNSET):
        document = _document(value)
        if isinstance(document, Rejected):
            return document
        source = document.get("source")
        envelope = _Envelope(
            document.get("op"),
            _Source(
                source.get("lsn"), source.get("ts_ms"), source.get("txId"), source.get("snapshot"), source.get("ts_us")
            )
            if isinstance(source, dict)
            else None,
            document.get("before"),
            document.get("after"),
        )
    return envelope


def _document(value: bytes) -> dict[str, Any] | Rejected:
    """Any JSON value, as Python objects: an envelope with its schema unwrapped, or why it is none."""
    try:
        document = _DECODER.decode(value)
    except msgspec.DecodeError as exc:
        return Rejected("not_json", str(exc))
    except RecursionError:
        return _too_deep()
    if isinstance(document, dict) and "payload" in document and "schema" in document:
        document = document["payload"]
    if not isinstance(document, dict):
        return Rejected("not_an_envelope", f"a JSON {type(document).__name__}, not an object")
    return document


def _too_deep() -> Rejected:
    return Rejected("too_deep", "JSON nested deeper than the decoder's recursion limit")


def _source(envelope: _Envelope) -> tuple[str, int, int, int | None] | Rejected:
    """``(op, lsn, committed_at_ms, tx_id)`` of an envelope."""
    op, source = envelope.op, envelope.source
    if op not in _OPS:
        return Rejected("bad_op", f"op {op!r} is none of c, u, d, r, t")
    if source is None:
        return Rejected("no_source", "the envelope has no source block")
    lsn, ts_ms, tx_id = source.lsn, source.ts_ms, source.txId
    if not isinstance(lsn, int) or isinstance(lsn, bool) or not 0 <= lsn < 2**63:
        return Rejected("no_lsn", f"source.lsn is {lsn!r}, not a WAL position")
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool) or ts_ms not in _INT64:
        return Rejected("no_commit_time", f"source.ts_ms is {ts_ms!r}")
    return op, lsn, ts_ms, tx_id if isinstance(tx_id, int) else None


def _image(envelope: _Envelope, op: str) -> dict[str, Any] | Rejected:
    image = envelope.before if op == "d" else envelope.after
    if not isinstance(image, dict):
        return Rejected("no_row_image", f"a {op!r} event without its {'before' if op == 'd' else 'after'} image")
    return image


def decode_transaction(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> TransactionChange | Rejected:
    envelope = _envelope(value)
    if isinstance(envelope, Rejected):
        return envelope
    source = _source(envelope)
    if isinstance(source, Rejected):
        return source
    op, lsn, ts_ms, tx_id = source
    row = {} if op == TRUNCATE else _image(envelope, op)
    if isinstance(row, Rejected):
        return row
    if op != TRUNCATE and row.get("transaction_id") is None:
        return Rejected("no_key", "the row image has no transaction_id")
    assert envelope.source is not None  # _source refused it otherwise
    snapshot, ts_us = envelope.source.snapshot, envelope.source.ts_us
    return TransactionChange(
        topic,
        partition,
        offset,
        key,
        op,
        lsn,
        ts_ms,
        tx_id,
        row,
        snapshot if isinstance(snapshot, str) else "false",
        ts_us if isinstance(ts_us, int) and not isinstance(ts_us, bool) else None,
    )


def decode_table_change(table: str, key_column: str, value: bytes | None) -> TableChange | TableTruncate | Rejected:
    """A customers or facilities event; ``key_column`` names its primary key."""
    envelope = _envelope(value)
    if isinstance(envelope, Rejected):
        return envelope
    source = _source(envelope)
    if isinstance(source, Rejected):
        return source
    op, lsn, ts_ms, _ = source
    if op == TRUNCATE:
        return TableTruncate(table, lsn, ts_ms)
    row = _image(envelope, op)
    if isinstance(row, Rejected):
        return row
    return _table_version(table, key_column, op, row, at=(lsn, ts_ms))


def _table_version(
    table: str, key_column: str, op: str, row: dict[str, Any], *, at: tuple[int, int]
) -> TableChange | Rejected:
    """The version a row image is, ``at`` its ``(LSN, commit time in ms)``."""
    key = _key_text(row.get(key_column))
    if key is None:
        return Rejected("no_key", f"the row image has no {key_column}")
    attributes = {} if op == "d" else {name: row.get(name) for name in TABLE_ATTRIBUTES.get(table, ())}
    for name, found in attributes.items():
        if isinstance(found, int) and not isinstance(found, bool) and found not in _INT64:
            attributes[name] = str(found)  # exact, as a number with a fraction is kept
        elif not (found is None or isinstance(found, (str, int, bool))):
            return Rejected("bad_attribute", f"{name} is a JSON {type(found).__name__}, not a column's value")
    return TableChange(table, key, *at, op == "d", attributes)


def decode_lsn(value: bytes | None) -> int | None:
    """The ``source.lsn`` of any change event (the heartbeat table's), None when it has none."""
    envelope = _envelope(value)
    if isinstance(envelope, Rejected):
        return None
    source = _source(envelope)
    return None if isinstance(source, Rejected) else source[1]
