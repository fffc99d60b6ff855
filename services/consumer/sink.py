"""Rows of one partition → Parquet files in the lake, one per ``dt``/``hour`` folder.

``dt``/``hour`` come from the record (``_source_ts``, else the Kafka timestamp), never from the wall clock,
and each file is named by the first and last offset it holds (:class:`~services.common.lake.LakeLayout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.common.lake import Lake, LakeFile, LakeLayout

__all__ = ["SMALL_FILE_ROWS", "ParquetSink", "WrittenFile"]

_HOUR_US = 3_600_000_000
# A folder is a date of years 1-9999 (what Python's datetime and every warehouse hold). Decoding refuses
# event times outside them; the sink still never trusts that, so no int64 time can make it raise.
_FIRST_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
_LAST_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class WrittenFile:
    file: LakeFile
    rows: int
    first_offset: int
    last_offset: int


def _micros(column: pa.ChunkedArray) -> pa.Array:
    """A time column as int64 microseconds, null where it is no date of years 1-9999."""
    micros = pc.cast(column, pa.int64())
    inside = pc.and_(pc.greater_equal(micros, _FIRST_US), pc.less_equal(micros, _LAST_US))
    return pc.if_else(inside, micros, pa.scalar(None, pa.int64()))


def _event_micros(rows: pa.Table) -> np.ndarray:
    """Each row's event time in microseconds: ``_source_ts``, else the Kafka timestamp, else the intake time,
    the first of them that is a date at all (the epoch if none is)."""
    source = rows.column("_source_ts")
    if source.null_count == 0:  # nearly every batch: one cast, not a dozen calls choosing per row
        micros = np.asarray(source.cast(pa.int64()).to_numpy(), dtype=np.int64)
        if micros.min() >= _FIRST_US and micros.max() <= _LAST_US:
            return micros
    times = [_micros(rows.column(name)) for name in ("_source_ts", "_kafka_timestamp", "_ingested_at")]
    event_time = pc.fill_null(pc.coalesce(*times), 0)
    return np.asarray(event_time.to_numpy(zero_copy_only=False), dtype=np.int64)


def _by_hour(rows: pa.Table) -> list[tuple[int, pa.Table]]:
    """``(hours since the epoch, rows of that hour)`` in hour order, each in offset order.

    The hour is the record's own time (``_source_ts``, else the Kafka timestamp, else when it was taken in),
    the first of them that is a date at all. One stable sort and one take for the whole batch, then
    zero-copy slices: a batch that spans many hours (a backfill, a snapshot of old rows) costs the same as
    one that spans a few.
    """
    hours = _event_micros(rows) // _HOUR_US
    if (hours[1:] == hours[:-1]).all():  # most batches: one hour, nothing to move
        return [(int(hours[0]), rows)]
    order = np.argsort(hours, kind="stable")
    hours, rows = hours[order], rows.take(order)
    starts = [0, *(np.flatnonzero(hours[1:] != hours[:-1]) + 1).tolist()]
    stops = [*starts[1:], len(hours)]
    return [(int(hours[a]), rows.slice(a, b - a)) for a, b in zip(starts, stops, strict=True)]


# Below this many rows a file is written with snappy: zstd sets up a compression context for every column
# chunk, which on a file of a few hundred rows costs more CPU than the rest of the file, to save a few
# kilobytes (BENCHMARKS.md, "How the writer encodes").
SMALL_FILE_ROWS = 4_096


def _codec(rows: int) -> str:
    """The compression of a lake file of ``rows`` rows."""
    return "snappy" if rows < SMALL_FILE_ROWS else "zstd"


def _parquet_bytes(rows: pa.Table) -> bytes:
    """Plain-encoded Parquet: under compression a dictionary makes change rows' files no smaller, while its
    builders hash every value of every column (write CPU and encoder memory). Encoded into Arrow's own buffer:
    a Python file object would take a call back into the interpreter for every page the encoder writes."""
    out = pa.BufferOutputStream()
    pq.write_table(
        rows,
        out,
        compression=_codec(rows.num_rows),
        write_statistics=True,
        store_schema=True,
        write_page_checksum=True,  # a page changed at rest is refused on read, never loaded as other values
        use_dictionary=False,
    )
    return bytes(out.getvalue())


class ParquetSink:
    def __init__(self, lake: Lake, topic_prefix: str) -> None:
        self._lake = lake
        self._prefix = topic_prefix

    def write(
        self, schema: str, table: str, partition: int, rows: pa.Table, *, replay: tuple[int, int, int] | None = None
    ) -> list[WrittenFile]:
        """Write ``rows`` (one partition, offset order); returns the files, in hour order. ``replay``: the rows
        are replayed records read from these replay topic offsets (partition, first, last), named apart."""
        if rows.num_rows == 0:
            return []
        written = []
        for bucket, part in _by_hour(rows):
            hour = _EPOCH + timedelta(hours=bucket)
            offsets = part.column("_kafka_offset")
            first, last = int(offsets[0].as_py()), int(offsets[-1].as_py())
            path = LakeLayout.path_for(
                self._prefix,
                schema,
                table,
                dt=hour.date(),
                hour=hour.hour,
                partition=partition,
                first_offset=first,
                last_offset=last,
                replay=replay,
            )
            file = self._lake.write(path, _parquet_bytes(part))
            written.append(WrittenFile(file, part.num_rows, first, last))
        return written
