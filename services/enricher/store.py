"""The global tables: every version of customers and facilities the join may need, in a local LMDB file.

Why LMDB (bench/enricher_store_bench.py, figures in docs/architecture.md): one write transaction covers any
number of keys, so the table rows read from a poll and the topic offsets they were read up to commit
together — after a crash the store is exactly as of some offset, and reading resumes there with nothing to
replay or undo. Reads are memory-mapped and lock-free; the file grows to millions of keys without holding
them in the process's memory.

Layout: ``versions`` maps ``<table>\\0<key>`` to ``[floor, [[lsn, committed_at_ms, deleted, attributes], …]]``
in LSN order, at most ``max_versions`` of the newest; ``floor`` is the LSN of the newest version dropped
(0 when none was), below which the store cannot answer. ``truncates`` maps ``<table>`` to the
``[[lsn, committed_at_ms], …]`` of its ``TRUNCATE``s in LSN order: kept apart from the keys, so a truncate is
one write whatever the table's size, and a version read later from another partition, written before the
truncate, still counts as truncated. ``positions`` maps ``<topic>\\0<partition>`` to
``[next offset, max LSN read]``. The store is a cache of the topics: wiped, it is rebuilt by reading them
from the start.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import msgspec

from services.enricher.errors import StoreError
from services.enricher.events import TableChange, TableTruncate

__all__ = ["EXPIRED", "Expired", "Position", "TableStore", "Version"]


class Version(msgspec.Struct, frozen=True, gc=False):  # one per lookup: cheap to build (events.py)
    lsn: int
    committed_at_ms: int
    deleted: bool
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Expired:
    """The version asked for was older than every version kept (``max_versions`` dropped it)."""


EXPIRED = Expired()


@dataclass(frozen=True, slots=True)
class Position:
    """How far a table topic's partition has been read into the store."""

    next_offset: int
    max_lsn: int


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact; the enriched record carries decimals as text
    raise TypeError(f"cannot store a {type(value).__name__}")


class TableStore:
    """Versions per key and the offsets they were read up to, committed together."""

    def __init__(self, path: Path, *, map_size: int, max_versions: int) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(str(path), map_size=map_size, max_dbs=3, subdir=True)
        except (OSError, lmdb.Error) as exc:
            raise StoreError(f"cannot open the table store in {path}: {exc}") from exc
        self._versions = self._env.open_db(b"versions")
        self._positions = self._env.open_db(b"positions")
        self._truncates_db = self._env.open_db(b"truncates")
        self._max_versions = max_versions
        self._reader: Any = None  # one read transaction for lookups until the next write: a snapshot is cheap
        self._truncates = self._stored_truncates()  # per table, (lsn, committed_at_ms) in LSN order: few, kept here

    def apply(
        self, changes: Iterable[TableChange | TableTruncate], positions: dict[tuple[str, int], Position]
    ) -> dict[str, int]:
        """Add ``changes`` and record ``positions``, all or nothing; returns how many were new, per table."""
        added: dict[str, int] = {}
        truncates = {table: list(found) for table, found in self._truncates.items()}
        try:
            with self._env.begin(write=True) as txn:
                for change in changes:
                    if isinstance(change, TableTruncate):
                        new = self._add_truncate(txn, change, truncates.setdefault(change.table, []))
                    else:
                        new = self._add(txn, change)
                    added[change.table] = added.get(change.table, 0) + new
                for (topic, partition), position in positions.items():
                    txn.put(
                        _position_key(topic, partition),
                        msgpack.packb([position.next_offset, position.max_lsn]),
                        db=self._positions,
                    )
        except lmdb.Error as exc:
            raise StoreError(f"cannot write the table store: {exc}") from exc
        self._truncates = truncates  # only once they are stored
        self._drop_reader()  # lookups from now on see what was just written
        return added

    def _add_truncate(self, txn: Any, truncate: TableTruncate, found: list[tuple[int, int]]) -> int:
        at = bisect.bisect_left(found, (truncate.lsn,))
        if at < len(found) and found[at][0] == truncate.lsn:
            return 0  # read again after a crash before its offset was stored: already here
        found.insert(at, (truncate.lsn, truncate.committed_at_ms))
        txn.put(truncate.table.encode(), msgpack.packb(found), db=self._truncates_db)
        return 1

    def _stored_truncates(self) -> dict[str, list[tuple[int, int]]]:
        with self._env.begin() as txn:
            return {
                bytes(table).decode(): [(lsn, at) for lsn, at in msgpack.unpackb(raw)]
                for table, raw in txn.cursor(db=self._truncates_db)
            }

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.abort()
            self._reader = None

    def _add(self, txn: Any, change: TableChange) -> int:
        key = _version_key(change.table, change.key)
        stored = txn.get(key, db=self._versions)
        floor, versions = msgpack.unpackb(stored) if stored is not None else (0, [])
        lsns = [v[0] for v in versions]
        at = bisect.bisect_left(lsns, change.lsn)
        if at < len(lsns) and lsns[at] == change.lsn:
            return 0  # read again after a crash before its offset was stored: already here
        if change.lsn <= floor:
            return 0  # older than what was dropped already
        versions.insert(at, [change.lsn, change.committed_at_ms, change.deleted, change.attributes])
        if len(versions) > self._max_versions:
            dropped = versions[: len(versions) - self._max_versions]
            versions = versions[len(dropped) :]
            floor = dropped[-1][0]
        txn.put(key, msgpack.packb([floor, versions], default=_plain), db=self._versions)
        return 1

    def as_of(self, table: str, key: str, lsn: int) -> Version | Expired | None:
        """The version of ``table``/``key`` with the greatest LSN ≤ ``lsn``; None when there is none. A truncate
        of the table after that version and at most ``lsn`` is the version then: the row was deleted by it."""
        if self._reader is None:
            self._reader = self._env.begin()
        stored = self._reader.get(_version_key(table, key), db=self._versions)
        if stored is None:
            return None
        floor, versions = msgpack.unpackb(stored)
        for found in reversed(versions):  # the newest first: most changes join the latest version
            if found[0] <= lsn:
                return self._truncated(table, found[0], lsn) or Version(found[0], found[1], bool(found[2]), found[3])
        if not floor:
            return None
        return self._truncated(table, floor, lsn) or EXPIRED  # the row's version then was dropped, not its truncate

    def _truncated(self, table: str, after: int, lsn: int) -> Version | None:
        """The deletion by the newest truncate of ``table`` in (``after``, ``lsn``], None when there is none."""
        truncates = self._truncates.get(table)
        if not truncates:
            return None
        at = bisect.bisect_right(truncates, (lsn, _NEWEST)) - 1
        if at < 0 or truncates[at][0] <= after:
            return None
        truncated_at, committed_at_ms = truncates[at]
        return Version(truncated_at, committed_at_ms, True, {})

    def positions(self) -> dict[tuple[str, int], Position]:
        found = {}
        with self._env.begin() as txn:
            for raw_key, raw_value in txn.cursor(db=self._positions):
                topic, _, partition = bytes(raw_key).decode().rpartition("\0")
                next_offset, max_lsn = msgpack.unpackb(raw_value)
                found[(topic, int(partition))] = Position(next_offset, max_lsn)
        return found

    def close(self) -> None:
        self._drop_reader()
        self._env.close()


_NEWEST = 2**63  # sorts after any commit time in a (lsn, committed_at_ms) pair


def _version_key(table: str, key: str) -> bytes:
    return f"{table}\0{key}".encode()


def _position_key(topic: str, partition: int) -> bytes:
    return f"{topic}\0{partition}".encode()
