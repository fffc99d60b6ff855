"""The writer's buffers: the size of the next poll (the configured batch, bounded by a share of the buffer
budget), the buffers flushed when the budget is exceeded, and a partition's small tables joined into chunks
Parquet encodes at once."""

from __future__ import annotations

import pyarrow as pa
import pytest

from services.consumer.buffers import (
    COLUMN_OVERHEAD,
    JOIN_ROWS,
    POLL_SHARE_OF_BUDGET,
    PartitionBuffer,
    PollSize,
    held_bytes,
    over_budget,
)

MIB = 1 << 20


def test_the_first_poll_asks_for_the_configured_batch() -> None:
    assert PollSize.within(20_000, 64 * MIB).next() == 20_000


def test_large_records_shrink_the_poll_to_its_share_of_the_budget() -> None:
    size = PollSize.within(20_000, 64 * MIB)
    size.saw(20_000, 20_000 * 1_250)
    assert size.next() == (64 * MIB // POLL_SHARE_OF_BUDGET) // 1_250
    assert size.next() * 1_250 <= 64 * MIB // POLL_SHARE_OF_BUDGET


def test_small_records_or_a_large_budget_keep_the_configured_batch() -> None:
    small = PollSize.within(20_000, 64 * MIB)
    small.saw(5_000, 5_000 * 100)
    large = PollSize.within(10_000, 512 * MIB)
    large.saw(10_000, 10_000 * 1_250)
    assert (small.next(), large.next()) == (20_000, 10_000)


def _holding(bytes_: int) -> PartitionBuffer:
    buffer = PartitionBuffer("t", 0, start=0, end=1)
    buffer.bytes = bytes_
    return buffer


def test_within_the_budget_no_buffer_is_flushed() -> None:
    buffers = {("t", p): _holding(b) for p, b in enumerate([30, 50, 20])}
    assert over_budget(buffers, 100) == []
    assert over_budget({}, 0) == []


def test_over_the_budget_the_biggest_buffers_that_bring_it_back_within_it_together() -> None:
    buffers = {("t", p): _holding(b) for p, b in enumerate([30, 5, 50, 20, 40])}  # 145 bytes held
    assert over_budget(buffers, 100) == [("t", 2)]  # 50 over 45 too many
    assert over_budget(buffers, 60) == [("t", 2), ("t", 4)]  # 85 over, 90 freed
    assert over_budget(buffers, 0) == [("t", 2), ("t", 4), ("t", 0), ("t", 3), ("t", 1)]


@pytest.mark.parametrize(("records", "value_bytes"), [(0, 0), (3, 0)])
def test_an_empty_poll_or_one_of_tombstones_never_stops_polling(records: int, value_bytes: int) -> None:
    size = PollSize.within(20_000, 1 * MIB)
    size.saw(10, 10 * 8 * MIB)  # one record bigger than the share: still one at a time
    assert size.next() == 1
    size.saw(records, value_bytes)
    assert size.next() >= 1


def test_the_size_follows_the_last_poll() -> None:
    size = PollSize.within(20_000, 64 * MIB)
    size.saw(1_000, 1_000 * 40_000)
    shrunk = size.next()
    size.saw(1_000, 1_000 * 500)
    assert (shrunk, size.next()) == (104, 8_388)


def _rows(first: int, count: int, *, note: bool = False) -> pa.Table:
    """``count`` rows from offset ``first``; ``note``: a column added by a newer contract version."""
    columns = {"offset": pa.array(range(first, first + count), pa.int64()), "text": [f"r{i}" for i in range(count)]}
    if note:
        columns["note"] = pa.array([f"n{first + i}" for i in range(count)])
    return pa.table(columns)


def _chunk_lengths(table: pa.Table) -> list[int]:
    return [len(chunk) for chunk in table.column("offset").chunks]


def test_small_tables_are_joined_into_chunks_of_the_same_rows_in_order() -> None:
    buffer = PartitionBuffer("t", 0, start=0, end=0)
    offset = 0
    for size in [37] * 60 + [5]:
        buffer.add(_rows(offset, size), offset + size)
        offset += size
    taken = buffer.take()
    assert taken is not None
    assert taken.column("offset").to_pylist() == list(range(offset))
    assert buffer.rows == taken.num_rows == offset
    assert buffer.bytes == taken.nbytes + len(buffer.tables) * taken.num_columns * COLUMN_OVERHEAD
    # one chunk per run of JOIN_ROWS rows and one for the rest, not one per table added
    assert len(_chunk_lengths(taken)) == -(-offset // JOIN_ROWS) <= 3
    assert all(length >= JOIN_ROWS for length in _chunk_lengths(taken)[:-1])


def test_a_large_table_is_kept_as_it_came_and_ends_the_run_before_it() -> None:
    buffer = PartitionBuffer("t", 0, start=0, end=0)
    small = [_rows(i * 10, 10) for i in range(3)]
    large = _rows(30, JOIN_ROWS)
    for table in [*small, large]:
        buffer.add(table, table.column("offset")[-1].as_py() + 1)
    assert _chunk_lengths(buffer.tables[0]) == [30]  # the run of three, joined when the large one came
    assert buffer.tables[1] is large
    taken = buffer.take()
    assert taken is not None
    assert taken.column("offset").to_pylist() == list(range(30 + JOIN_ROWS))


def test_a_run_across_a_new_contract_version_reads_null_in_the_new_column() -> None:
    buffer = PartitionBuffer("t", 0, start=0, end=0)
    buffer.add(_rows(0, JOIN_ROWS), JOIN_ROWS)
    buffer.add(_rows(JOIN_ROWS, 3), JOIN_ROWS + 3)
    buffer.add(_rows(JOIN_ROWS + 3, 2, note=True), JOIN_ROWS + 5)
    taken = buffer.take()
    assert taken is not None
    assert taken.column("offset").to_pylist() == list(range(JOIN_ROWS + 5))
    assert taken.column("note").to_pylist() == [None] * (JOIN_ROWS + 3) + [f"n{JOIN_ROWS + 3}", f"n{JOIN_ROWS + 4}"]


def test_each_table_held_counts_its_columns_overhead_and_a_join_gives_it_back() -> None:
    buffer = PartitionBuffer("t", 0, start=0, end=0)
    tables = [_rows(i * 3, 3) for i in range(40)]
    for table in tables:
        buffer.add(table, table.column("offset")[-1].as_py() + 1)
    values = sum(t.nbytes for t in tables)
    # 40 tables of 3 rows: what they hold beyond their values is most of what the buffer holds
    assert buffer.bytes == values + 40 * 2 * COLUMN_OVERHEAD
    assert buffer.bytes > 2 * values
    taken = buffer.take()  # the run joined into one table: one table's overhead left
    assert taken is not None
    assert len(buffer.tables) == 1
    assert buffer.bytes == held_bytes(taken) == taken.nbytes + 2 * COLUMN_OVERHEAD


def test_durable_forgets_the_run() -> None:
    buffer = PartitionBuffer("t", 0, start=0, end=0)
    buffer.add(_rows(0, 5), 5)
    buffer.add(_rows(5, 5), 10)
    buffer.durable()
    assert (buffer.rows, buffer.bytes, buffer.run_tables, buffer.run_rows) == (0, 0, 0, 0)
    buffer.add(_rows(10, 4), 14)
    taken = buffer.take()
    assert taken is not None
    assert taken.column("offset").to_pylist() == [10, 11, 12, 13]
