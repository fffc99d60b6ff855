"""Per-partition buffers and the policy that decides when they are flushed."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import pyarrow as pa

__all__ = [
    "COLUMN_OVERHEAD",
    "JOIN_ROWS",
    "POLL_SHARE_OF_BUDGET",
    "FlushPolicy",
    "PartitionBuffer",
    "PollSize",
    "held_bytes",
    "over_budget",
]

K = TypeVar("K", bound=Hashable)

# Parquet's encoders pay for every chunk of every column: a partition fed a few dozen rows a poll (many tables,
# each with a trickle of changes) would make files of hundreds of tiny chunks, which take half again as long to
# encode as one chunk of the same rows (BENCHMARKS.md, "How the writer encodes"). A buffer joins each run of
# small tables into one chunk once the run holds this many rows, or when it is taken: a run at a time is copied.
JOIN_ROWS = 1_024

# What a buffered table holds beyond its values (``Table.nbytes``), per column: the C++ objects that own the
# column's buffers and the allocator's alignment and bookkeeping of each, whatever the rows — 0.9-1.0 KiB for a
# change table (BENCHMARKS.md, "Lake writer at scale"), counted with a quarter to spare. A writer of hundreds of
# partitions, each holding a few small tables, holds tens of MiB of it: the budget counts it like values.
COLUMN_OVERHEAD = 1_280


def over_budget(buffers: Mapping[K, PartitionBuffer], budget: int) -> list[K]:
    """The biggest buffers, biggest first, whose flush brings what ``buffers`` hold within ``budget`` bytes
    (none when they are within it already)."""
    excess = sum(b.bytes for b in buffers.values()) - budget
    chosen: list[K] = []
    if excess <= 0:  # nearly every poll: no sort
        return chosen
    for key in sorted(buffers, key=lambda k: buffers[k].bytes, reverse=True):
        chosen.append(key)
        excess -= buffers[key].bytes
        if excess <= 0:
            break
    return chosen


def held_bytes(rows: pa.Table) -> int:
    """The memory buffering ``rows`` (one chunk per column) takes: its values and its columns' overhead."""
    return int(rows.nbytes + rows.num_columns * COLUMN_OVERHEAD)


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """Flush a partition on rows, bytes or age, whichever comes first; age keeps idle partitions fresh."""

    max_rows: int
    max_bytes: int
    max_age_s: float

    def due(self, buffer: PartitionBuffer, now: float) -> str | None:
        """Why the buffer must be flushed now, or None."""
        if buffer.rows >= self.max_rows:
            return "rows"
        if buffer.bytes >= self.max_bytes:
            return "bytes"
        if buffer.pending and now - buffer.opened_at >= self.max_age_s:
            return "age"
        return None


@dataclass(slots=True)
class PartitionBuffer:
    """Everything consumed from one partition since its last commit.

    ``start`` is the committed position (the first offset not yet durable); ``end`` is one past the last
    offset consumed. Offsets in between are rows here, DLQ'd records, tombstones or skipped records.
    """

    topic: str
    partition: int
    start: int
    end: int
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    clock: Callable[[], float] = time.monotonic  # when a buffer opens; a simulation passes its own
    run_tables: int = field(default=0, init=False)  # the last tables added, each under JOIN_ROWS rows, not joined
    run_rows: int = field(default=0, init=False)

    @property
    def pending(self) -> bool:
        return self.end > self.start

    def add(self, rows: pa.Table | None, next_offset: int) -> None:
        """Rows decoded from offsets up to ``next_offset`` (exclusive), if any."""
        if rows is not None and rows.num_rows:
            if rows.num_rows >= JOIN_ROWS:
                self._join_run()
            else:
                self.run_tables += 1
                self.run_rows += rows.num_rows
            self.tables.append(rows)
            self.rows += rows.num_rows
            self.bytes += held_bytes(rows)
            if self.run_rows >= JOIN_ROWS:
                self._join_run()
        self.advance(next_offset)

    def advance(self, next_offset: int) -> None:
        """Offsets up to ``next_offset`` were consumed; those without rows are DLQ'd, tombstones or skipped."""
        if not self.pending:
            self.opened_at = self.clock()
        self.end = next_offset

    def take(self) -> pa.Table | None:
        """The buffered rows as one table (None when there are none), in the newest contract's schema."""
        if not self.tables:
            return None
        self._join_run()
        if len(self.tables) == 1:
            return self.tables[0]
        newest = self.tables[-1].schema
        return pa.concat_tables([_align(t, newest) for t in self.tables])

    def committed(self) -> None:
        """Everything up to ``end`` is durable and committed: start over from there."""
        self.start = self.end
        self.durable()

    def durable(self) -> None:
        """The rows are in the lake but ``end`` is not committed: drop them, keep ``start`` (the committed
        position), so the partition stays pending and its next checkpoint commits again."""
        self.tables.clear()
        self.rows = 0
        self.bytes = 0
        self.run_tables = self.run_rows = 0

    def _join_run(self) -> None:
        """The last run of small tables as one table of one chunk (columns added since the run's first table
        read NULL, as in :meth:`take`)."""
        count, self.run_tables, self.run_rows = self.run_tables, 0, 0
        if count < 2:
            return
        run = self.tables[-count:]
        newest = run[-1].schema
        joined = pa.concat_tables([_align(t, newest) for t in run]).combine_chunks()
        self.bytes += held_bytes(joined) - sum(held_bytes(t) for t in run)
        self.tables[-count:] = [joined]


def _align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Rows decoded under an older contract version: columns added since then read NULL."""
    if table.schema.equals(schema, check_metadata=True):
        return table
    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


# A poll's values are copied, decoded and converted before they are buffered: a poll's working set is a few
# times its values, held outside the buffers. A sixteenth of the budget in values keeps it a small share.
POLL_SHARE_OF_BUDGET = 16


@dataclass(slots=True)
class PollSize:
    """How many records the next poll asks for: at most ``most``, and no more than ``value_bytes`` of values
    at the mean size of the last poll's records (the first poll asks for ``most``)."""

    most: int
    value_bytes: int
    record_bytes: float = 0.0

    @classmethod
    def within(cls, poll_batch: int, buffer_max_bytes: int) -> PollSize:
        return cls(poll_batch, buffer_max_bytes // POLL_SHARE_OF_BUDGET)

    def next(self) -> int:
        if self.record_bytes <= 0:
            return self.most
        return max(1, min(self.most, int(self.value_bytes / self.record_bytes)))

    def saw(self, records: int, value_bytes: int) -> None:
        """A poll returned ``records`` records holding ``value_bytes`` bytes of values."""
        if records:
            self.record_bytes = max(1.0, value_bytes / records)
