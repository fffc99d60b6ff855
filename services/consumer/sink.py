"""Rows of one partition → Parquet files in the lake, one per ``dt``/``hour`` folder.

``dt``/``hour`` come from the record (``_source_ts``, else the Kafka timestamp), never from the wall clock,
and each file is named by the first offset it holds: re-processing after a crash rewrites the same names.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.common.lake import Lake, LakeFile, lake_file_path

__all__ = ["ParquetSink", "WrittenFile"]

_HOUR_US = 3_600_000_000


@dataclass(frozen=True, slots=True)
class WrittenFile:
    file: LakeFile
    rows: int
    first_offset: int


def _by_hour(rows: pa.Table) -> list[tuple[int, pa.Table]]:
    """``(hours since the epoch, rows of that hour)`` in hour order, each in offset order.

    One stable sort and one take for the whole batch, then zero-copy slices: a batch that spans many
    hours (a backfill, a snapshot of old rows) costs the same as one that spans a few.
    """
    event_time = pc.coalesce(rows.column("_source_ts"), rows.column("_kafka_timestamp"), rows.column("_ingested_at"))
    micros = np.asarray(pc.cast(event_time, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    hours = micros // _HOUR_US
    if (hours[1:] == hours[:-1]).all():  # most batches: one hour, nothing to move
        return [(int(hours[0]), rows)]
    order = np.argsort(hours, kind="stable")
    hours, rows = hours[order], rows.take(order)
    starts = [0, *(np.flatnonzero(hours[1:] != hours[:-1]) + 1).tolist()]
    stops = [*starts[1:], len(hours)]
    return [(int(hours[a]), rows.slice(a, b - a)) for a, b in zip(starts, stops, strict=True)]


# Metadata columns with a new value on (nearly) every row. A dictionary would hold every value once more plus
# an index per row; plain encoding under zstd is smaller for them and cheaper to write.
_DISTINCT_PER_ROW = frozenset({"_source_ts", "_source_lsn", "_kafka_offset", "_kafka_timestamp"})


@functools.lru_cache(maxsize=256)
def _dictionary_columns(schema: pa.Schema) -> tuple[str, ...]:
    """The Parquet leaf paths (``tags.list.element``) of every column that keeps dictionary encoding."""
    empty = io.BytesIO()
    pq.write_table(schema.empty_table(), empty)
    leaves = pq.ParquetFile(io.BytesIO(empty.getvalue())).schema
    paths = (leaves.column(i).path for i in range(len(leaves)))
    return tuple(path for path in paths if path not in _DISTINCT_PER_ROW)


def _parquet_bytes(rows: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(
        rows,
        out,
        compression="zstd",
        write_statistics=True,
        store_schema=True,
        use_dictionary=list(_dictionary_columns(rows.schema)),
    )
    return out.getvalue()


class ParquetSink:
    def __init__(self, lake: Lake, topic_prefix: str) -> None:
        self._lake = lake
        self._prefix = topic_prefix

    def write(self, schema: str, table: str, partition: int, rows: pa.Table) -> list[WrittenFile]:
        """Write ``rows`` (one partition, offset order); returns the files, in hour order."""
        if rows.num_rows == 0:
            return []
        written = []
        for bucket, part in _by_hour(rows):
            hour = datetime.fromtimestamp(bucket * 3600, tz=UTC)
            first_offset = int(part.column("_kafka_offset")[0].as_py())
            path = lake_file_path(self._prefix, schema, table, hour.date(), hour.hour, partition, first_offset)
            file = self._lake.write(path, _parquet_bytes(part))
            written.append(WrittenFile(file, part.num_rows, first_offset))
        return written
