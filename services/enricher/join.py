"""The join rule and the hold queue, free of Kafka so they are tested on their own.

Rule: a transaction change at LSN *t* joins, per side, the version of its customer (facility) with the
greatest commit LSN ≤ *t*. A side is decided once its watermark — how far its topic is known to be read,
in LSN — has reached *t*: no version ≤ *t* can still arrive. Until both sides are decided the change is
held, at most ``max_wait_s``; then it goes out with what is known and ``released_by = "timeout"``, and a side
without a version is marked ``missing`` — never dropped.

Held changes of one input partition leave in offset order (the first one blocks those behind it), so the
offset to commit for a partition is always the offset of its first held change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Literal

import msgspec

from services.enricher.contract import side_columns
from services.enricher.events import TRUNCATE, TransactionChange
from services.enricher.store import Expired, Version

__all__ = ["HoldQueue", "JoinState", "Released", "Side", "encode", "enriched_value", "join_side"]

JoinState = Literal["joined", "missing", "deleted", "expired", "none"]
ReleasedBy = Literal["watermark", "timeout"]
Lookup = Callable[[str, str, int], Version | Expired | None]


class Side(msgspec.Struct, frozen=True, gc=False):  # built per event: a Struct, as in events.py
    """What one table side contributed to an enriched record."""

    state: JoinState
    lsn: int | None = None
    committed_at_ms: int | None = None
    attributes: dict[str, Any] = {}  # msgspec gives each instance its own


def join_side(lookup: Lookup, table: str, key: str | None, lsn: int) -> Side:
    """The side of ``table`` for a change at ``lsn`` whose row refers to ``key``."""
    if key is None:
        return Side("none")
    found = lookup(table, key, lsn)
    if found is None:
        return Side("missing")
    if isinstance(found, Expired):
        return Side("expired")
    if found.deleted:
        return Side("deleted", found.lsn, found.committed_at_ms)
    return Side("joined", found.lsn, found.committed_at_ms, found.attributes)


class _Held(msgspec.Struct, frozen=True, gc=False):
    change: TransactionChange
    since: float


class Released(msgspec.Struct, frozen=True, gc=False):
    change: TransactionChange
    released_by: ReleasedBy


class HoldQueue:
    """Changes waiting for the table sides, per input partition in offset order."""

    def __init__(self, max_wait_s: float) -> None:
        self._max_wait_s = max_wait_s
        self._held: dict[tuple[str, int], deque[_Held]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._held.values())

    def add(self, change: TransactionChange, now: float) -> None:
        queue = self._held.get((change.topic, change.partition))
        if queue is None:  # not setdefault: that would build a deque for every change
            queue = self._held[(change.topic, change.partition)] = deque()
        queue.append(_Held(change, now))

    def release(self, watermark: int, now: float) -> Iterator[Released]:
        """Changes whose LSN the ``watermark`` (the smaller of the sides') has reached, or that waited long enough."""
        for queue in self._held.values():
            while queue:
                first = queue[0]
                if first.change.lsn <= watermark:
                    by: ReleasedBy = "watermark"
                elif now - first.since >= self._max_wait_s:
                    by = "timeout"
                else:
                    break
                queue.popleft()
                yield Released(first.change, by)

    def first_offsets(self) -> dict[tuple[str, int], int]:
        """Each partition's first held offset: its committed offset may not pass it."""
        return {tp: queue[0].change.offset for tp, queue in self._held.items() if queue}

    def forget(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Drop what is held of ``partitions`` (all when None): they are read again by whoever owns them next."""
        if partitions is None:
            self._held.clear()
        for tp in partitions or ():
            self._held.pop(tp, None)


_CUSTOMER_COLUMNS = side_columns("customer", "customers")
_FACILITY_COLUMNS = side_columns("facility", "facilities")


def enriched_value(released: Released, customer: Side, facility: Side) -> dict[str, Any]:
    """The enriched change as a Debezium envelope, so the lake writer lands it like a captured table's.

    The op and the source block (LSN, commit time, txId, snapshot) are the transaction change's; the row
    image — ``after``, or ``before`` for a delete — is a row of ``schemas/enriched.transactions.avsc``
    (services/enricher/contract.py): the transaction's row, its input coordinates and both sides. A truncate
    has no image, as Debezium sends it.
    """
    change = released.change
    source: dict[str, Any] = {"lsn": change.lsn, "ts_ms": change.committed_at_ms, "txId": change.tx_id}
    if change.committed_at_us is not None:
        source["ts_us"] = change.committed_at_us
    source["snapshot"] = change.snapshot
    if change.op == TRUNCATE:  # every transaction is gone: the lake writer and silver honour it as a captured one
        return {"before": None, "after": None, "source": source, "op": TRUNCATE}
    row: dict[str, Any] = dict(change.row)  # decimals are text already (services/enricher/events.py)
    row["source_topic"] = change.topic
    row["source_partition"] = change.partition
    row["source_offset"] = change.offset
    row["released_by"] = released.released_by
    for (join, lsn, committed_at, attributes), side in ((_CUSTOMER_COLUMNS, customer), (_FACILITY_COLUMNS, facility)):
        row[join] = side.state
        row[lsn] = side.lsn
        row[committed_at] = side.committed_at_ms
        values = side.attributes
        for name, column in attributes:
            row[column] = values.get(name)  # a decimal is text already, or encoded as text (a Decimal)
    deleted = change.op == "d"
    return {"before": row if deleted else None, "after": None if deleted else row, "source": source, "op": change.op}


_ENCODER = msgspec.json.Encoder()  # compact UTF-8 JSON, about eight times as fast as ``json``'s encoder


def encode(record: dict[str, Any]) -> bytes:
    return _ENCODER.encode(record)
