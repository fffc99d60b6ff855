"""The SQL and job names of a BigQuery load: pure functions of the batch, so a retry builds the same ones.

The load jobs read the lake's ``dt=…/hour=…`` folders as hive partition keys, so every staged row carries
the folder it came from. Load jobs carry no source file name, so ``_lake_file`` is attributed from the
writer's naming: a row of partition P staged from folder F comes from F's file of partition P whose offset
range holds the row's offset, the one with the largest first offset when files overlap (a restarted or
zombie writer cut the partition differently; overlapping files hold the same changes).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.common.lake import FileSlot, LakeLayout, NotALakeFileError
from services.common.sql import googlesql_name, googlesql_string, googlesql_timestamp
from services.warehouse.bronze import COORDINATES, LOADER_COLUMNS, LoadBatch, bronze_schema, bronze_table
from services.warehouse.errors import WarehouseError

__all__ = [
    "MAX_URIS_PER_JOB",
    "PARTITION_COLUMN",
    "StagedRange",
    "attributed",
    "chunked",
    "commit_script",
    "file_slot",
    "load_job_id",
    "pruned",
]

MAX_URIS_PER_JOB = 10_000
"""BigQuery takes at most 10,000 source URIs in one load job."""

PARTITION_COLUMN = "_source_ts"
"""Bronze is partitioned by day of the change's commit time: every copy of a change has the same value."""

_MAX_JOB_ID = 1024
_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class StagedRange:
    """The ``_source_ts`` range of the staged rows, and whether some have none."""

    low: datetime | None
    high: datetime | None
    nulls: bool


def load_job_id(table: str, load_id: str, staging_created_ms: int, chunk: int) -> str:
    """The id of one load job of a batch: the same inputs give the same id, so a retry finds its job.

    The staging table's creation time is part of it: a batch retried after a crash loads into a new staging
    table and must not be taken for the finished job that filled the dropped one.
    """
    readable = _JOB_ID_UNSAFE.sub("_", f"cdcflow_load_{table}")
    suffix = f"_{load_id}_{staging_created_ms}_{chunk}"
    if len(readable) + len(suffix) > _MAX_JOB_ID:
        readable = readable[: _MAX_JOB_ID - len(suffix) - 17] + "_" + hashlib.sha256(table.encode()).hexdigest()[:16]
    return readable + suffix


def chunked(items: Sequence[str], size: int = MAX_URIS_PER_JOB) -> list[Sequence[str]]:
    """``items`` in order, cut into runs of at most ``size``."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [items[start : start + size] for start in range(0, len(items), size)]


def file_slot(path: str) -> FileSlot:
    """The parts of a lake file's path; a path the writer cannot have written is a :class:`WarehouseError`."""
    try:
        return LakeLayout.parse(path)
    except NotALakeFileError as exc:
        raise WarehouseError(str(exc)) from exc


def attributed(staging: str, batch: LoadBatch) -> str:
    """Staged rows of the ``staging`` table (a quoted reference), one per Kafka coordinate, each with the lake
    file it came from (see the module doc)."""
    key = ", ".join(f"s.{c}" for c in COORDINATES)
    files = ", ".join(
        f"STRUCT({googlesql_string(f.path)} AS path, DATE {googlesql_string(f.dt.isoformat())} AS dt,"
        f" {f.hour} AS hour, {f.partition} AS part, {f.first_offset} AS first_offset,"
        f" {'NULL' if f.last_offset is None else f.last_offset} AS last_offset)"
        for f in (file_slot(file.path) for file in batch.files)
    )
    return (
        f"SELECT s.*, f.path AS _lake_file FROM {staging} s LEFT JOIN UNNEST([{files}]) f"
        " ON f.dt = s.dt AND f.hour = s.hour AND f.part = s._kafka_partition AND f.first_offset <= s._kafka_offset"
        " AND (f.last_offset IS NULL OR s._kafka_offset <= f.last_offset)"
        f" WHERE TRUE QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY f.first_offset DESC) = 1"
    )


def pruned(alias: str, staged: StagedRange) -> str:
    """The bronze partitions a batch's rows can already be in: the days of its ``_source_ts`` range."""
    column = f"{alias}.{PARTITION_COLUMN}"
    ranges = []
    if staged.low is not None and staged.high is not None:
        ranges.append(f"{column} BETWEEN {googlesql_timestamp(staged.low)} AND {googlesql_timestamp(staged.high)}")
    if staged.nulls or not ranges:
        ranges.append(f"{column} IS NULL")
    return "(" + " OR ".join(ranges) + ")"


def commit_script(
    batch: LoadBatch, *, bronze: str, manifest: str, staging: str, staged: StagedRange, per_file: Mapping[str, int]
) -> str:
    """One transaction: the staged rows bronze (a quoted reference) does not hold yet, and the batch's files
    in the ``manifest``, each once."""
    load_id = googlesql_string(batch.load_id)
    loader_columns = {c.name for c in LOADER_COLUMNS}
    columns = [googlesql_name(f.name) for f in bronze_schema(batch.contract) if f.name not in loader_columns]
    probe = " AND ".join(f"t.{c} = a.{c}" for c in COORDINATES)
    manifest_rows = ", ".join(
        f"STRUCT({load_id} AS load_id, {googlesql_string(bronze_table(batch.contract))} AS bronze_table,"
        f" {googlesql_string(f.path)} AS lake_file, {googlesql_string(f.version)} AS lake_version,"
        f" {per_file.get(f.path, 0)} AS rows)"
        for f in batch.files
    )
    return f"""
BEGIN TRANSACTION;
INSERT INTO {bronze} ({", ".join(columns)}, _lake_file, _load_id, _loaded_at)
SELECT {", ".join(f"a.{c}" for c in columns)}, a._lake_file, {load_id}, CURRENT_TIMESTAMP()
FROM ({attributed(staging, batch)}) a
WHERE NOT EXISTS (SELECT 1 FROM {bronze} t WHERE {pruned("t", staged)} AND {probe});
INSERT INTO {manifest} (load_id, bronze_table, lake_file, lake_version, rows, loaded_at)
SELECT m.load_id, m.bronze_table, m.lake_file, m.lake_version, m.rows, CURRENT_TIMESTAMP()
FROM UNNEST([{manifest_rows}]) m
WHERE NOT EXISTS (
  SELECT 1 FROM {manifest} x WHERE x.lake_file = m.lake_file AND x.lake_version = m.lake_version
);
COMMIT TRANSACTION;
"""
