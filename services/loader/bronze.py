"""Bronze: the append-only change log of every captured table, derived from its contract.

Bronze holds the lake's columns (the row image, then the writer's metadata) plus the loader's own:
``_loaded_at``, ``_load_id`` and ``_lake_file``. Columns only ever get added, and every one is nullable.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from services.common.contracts import TableContract, lake_schema
from services.common.lake import LakeFile
from services.loader.errors import CorruptFileError

__all__ = [
    "COORDINATES",
    "LOADER_COLUMNS",
    "LoadBatch",
    "bronze_schema",
    "bronze_table",
    "read_lake_file",
]

COORDINATES = ("_kafka_topic", "_kafka_partition", "_kafka_offset")
"""A change's identity: each one is in bronze at most once."""

_UTC = pa.timestamp("us", tz="UTC")
LOADER_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("_loaded_at", _UTC),
    pa.field("_load_id", pa.string()),
    pa.field("_lake_file", pa.string()),
)


def bronze_table(contract: TableContract) -> str:
    """``<schema>__<table>``, in the ``bronze`` schema (dataset)."""
    return f"{contract.schema}__{contract.table}"


def bronze_schema(contract: TableContract) -> pa.Schema:
    fields = [f.with_nullable(True) for f in lake_schema(contract)]
    return pa.schema([*fields, *LOADER_COLUMNS])


@dataclass(frozen=True, slots=True)
class LoadBatch:
    """Files of one table loaded together. The id is derived from the files, so a retry reuses it."""

    contract: TableContract
    files: tuple[LakeFile, ...]

    @property
    def load_id(self) -> str:
        digest = hashlib.sha256(bronze_table(self.contract).encode())
        for file in sorted(self.files, key=lambda f: f.path):
            digest.update(f"\0{file.path}\0{file.version}".encode())
        return digest.hexdigest()[:24]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def read_lake_file(data: bytes, path: str, contract: TableContract) -> pa.Table:
    """One lake file as rows of the table's lake schema (columns added since it was written read NULL)."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise CorruptFileError(path, f"not readable as Parquet: {exc}") from None
    schema = pa.schema([f.with_nullable(True) for f in lake_schema(contract)])
    missing = [c for c in COORDINATES if c not in table.column_names]
    if missing:
        raise CorruptFileError(path, f"lacks the Kafka coordinates {missing}")
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        try:
            columns.append(table.column(field.name).cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise CorruptFileError(path, f"column {field.name} does not fit {field.type}: {exc}") from None
    return pa.Table.from_arrays(columns, schema=schema)


def concat_files(tables: Sequence[tuple[str, pa.Table]]) -> pa.Table:
    """Rows of several files, each tagged with the file it came from (``_lake_file``)."""
    tagged = [t.append_column("_lake_file", pa.array([path] * t.num_rows, pa.string())) for path, t in tables]
    return pa.concat_tables(tagged)
