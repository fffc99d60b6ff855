"""A lake file read for loading: every way a file can be unreadable, hostile or of another table is refused
with its reason (:class:`~services.warehouse.errors.CorruptFileError`) before it can take the loader down."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.common.contracts import TableContract, lake_schema
from services.warehouse.bronze import COORDINATES
from services.warehouse.errors import (
    CorruptFileError,
    EarlierTypeError,
    FileAheadOfContractError,
    LoadOutOfMemoryError,
)
from services.warehouse.parquet_pages import MalformedParquetError, declared_page_bytes

__all__ = ["MAX_DECODED_FILE_BYTES", "read_lake_file", "with_lake_file"]

MAX_DECODED_FILE_BYTES = 2 << 30
"""The most one lake file may take in memory once decoded. A writer's file holds one flush (64 MiB by
default); a file that declares or expands to more is refused before it is decoded, not after memory ran
out (a footer that declares 2⁴⁰ rows, a zstd page of kilobytes that declares gigabytes, a dictionary whose
one long value every row repeats)."""

_FIXED_WIDTHS = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8, "BYTE_ARRAY": 4}
"""Bytes per value a decoded column takes at least, by Parquet physical type (a BYTE_ARRAY: its offset)."""

_TEXT_TYPES = frozenset({"STRING", "JSON", "ENUM", "NONE"})  # BYTE_ARRAY logical types Arrow reads as text or binary
_READ_ERRORS = (pa.ArrowException, OSError, UnicodeDecodeError)
"""What pyarrow raises on a file it cannot read (a column name that is not UTF-8 raises UnicodeDecodeError)."""


def read_lake_file(data: bytes, path: str, contract: TableContract) -> pa.Table:
    """One lake file as rows of the table's lake schema (columns added since it was written read NULL).

    Every way a file can be unreadable, hostile or of another table becomes a :class:`CorruptFileError` with
    its reason, and the sizes a file declares are checked before anything is decoded. A file of a newer
    contract version than ``contract`` raises :class:`FileAheadOfContractError` (its table waits).
    """
    try:
        metadata = _footer(data, path)
        written = _contract_version(metadata, path, contract)
        table = _decode(data, metadata, path)
        return _conform(table, path, contract, written)
    except MemoryError as exc:  # pyarrow's ArrowMemoryError too: the loader's want, not the file's fault
        raise LoadOutOfMemoryError(path, str(exc) or type(exc).__name__) from exc


def _raise_if_memory(exc: Exception) -> None:
    """Memory that ran out is no sign of a corrupt file: raised on to :func:`read_lake_file`."""
    if isinstance(exc, MemoryError):
        raise exc


def _footer(data: bytes, path: str) -> pq.FileMetaData:
    """The file's footer, once its column names and declared sizes are known to be sane."""
    try:
        pages = declared_page_bytes(data)  # before any native reader sees the file
        metadata = pq.read_metadata(io.BytesIO(data))
        names = metadata.schema.to_arrow_schema().names
    except (MalformedParquetError, *_READ_ERRORS) as exc:
        _raise_if_memory(exc)
        raise CorruptFileError(path, f"not readable as Parquet: {exc}") from None
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CorruptFileError(path, f"column names repeat: {repeated}")
    declared = _declared_bytes(metadata, pages)
    if declared > MAX_DECODED_FILE_BYTES:
        raise CorruptFileError(
            path,
            f"declares {metadata.num_rows:,} row(s) and at least {declared:,} bytes once decoded, more than the "
            f"{MAX_DECODED_FILE_BYTES:,} a lake file may take",
        )
    return metadata


def _contract_version(metadata: pq.FileMetaData, path: str, contract: TableContract) -> int | None:
    """The contract version the file was written under (None: not stamped). Refuses, for now, a newer one than
    ``contract``: read with it, the columns that version added would be dropped. The loader lists files before
    it reads contracts, and a writer publishes a version before it writes under it; a version only in a
    writer's ``schemas/`` (a rollout that reached the writer first) is known here once the loader runs with
    it."""
    stamp = (metadata.metadata or {}).get(b"cdcflow.contract_version", b"")
    try:
        written = int(stamp)
    except ValueError:  # not stamped: read with the contract at hand
        return None
    if written > contract.version:
        raise FileAheadOfContractError(path, written, contract.version)
    return written


# Only the footer's schema and row groups are read before decoding: ``row_group(g).column(c)`` aborts the
# whole process (a C++ exception pyarrow does not translate) on some corrupt column statistics.


def _declared_bytes(metadata: pq.FileMetaData, pages: int) -> int:
    """At least what decoding takes: every declared row at its columns' fixed widths, plus the ``pages``
    (what the page headers declare once decompressed)."""
    width = 0
    for index in range(metadata.num_columns):
        column = metadata.schema.column(index)
        fixed = column.physical_type == "FIXED_LEN_BYTE_ARRAY"
        width += max(column.length, 1) if fixed else _FIXED_WIDTHS.get(column.physical_type, 1)
    groups = [metadata.row_group(g) for g in range(metadata.num_row_groups)]
    # a negative count must not hide a huge one: the reader refuses it, but only after the others are read
    rows: int = max(metadata.num_rows, sum(max(group.num_rows, 0) for group in groups))
    return rows * max(width, 1) + pages


def _text_columns(metadata: pq.FileMetaData) -> list[str]:
    """Top-level text and binary columns. They are read as dictionaries, so that a value repeated by every
    row is held once until :func:`_expanded_bytes` has measured what it would take."""
    names = []
    for index in range(metadata.num_columns):
        column = metadata.schema.column(index)
        top_level = column.path == column.name
        if top_level and column.physical_type == "BYTE_ARRAY" and column.logical_type.type in _TEXT_TYPES:
            names.append(column.name)
    return names


def _decode(data: bytes, metadata: pq.FileMetaData, path: str) -> pa.Table:
    try:
        parquet = pq.ParquetFile(
            io.BytesIO(data),
            metadata=metadata,
            read_dictionary=_text_columns(metadata),
            page_checksum_verification=True,  # the writer stores a CRC per page: a flipped bit is refused
        )
        table = parquet.read()
    except _READ_ERRORS as exc:
        _raise_if_memory(exc)
        raise CorruptFileError(path, f"not readable as Parquet: {exc}") from None
    try:  # the reader checks neither dictionary indices nor UTF-8; DuckDB refuses text that is not UTF-8
        table.validate(full=True)
    except pa.ArrowException as exc:
        _raise_if_memory(exc)
        raise CorruptFileError(path, f"not valid: {exc}") from None
    if table.num_rows != metadata.num_rows:
        raise CorruptFileError(path, f"declares {metadata.num_rows:,} rows but holds {table.num_rows:,}")
    expanded = _expanded_bytes(table)
    if expanded > MAX_DECODED_FILE_BYTES:
        raise CorruptFileError(
            path, f"decodes to {expanded:,} bytes, more than the {MAX_DECODED_FILE_BYTES:,} a lake file may take"
        )
    return table


def _expanded_bytes(table: pa.Table) -> int:
    """What the table takes once every dictionary column holds each row's own value."""
    total = 0
    for column in table.columns:
        if not pa.types.is_dictionary(column.type):
            total += column.nbytes
            continue
        for chunk in column.chunks:
            lengths = pc.take(pc.binary_length(chunk.dictionary), chunk.indices)
            total += int(pc.sum(lengths).as_py() or 0) + 8 * len(chunk)  # the values, and an offset and index a row
    return total


def _conform(table: pa.Table, path: str, contract: TableContract, written: int | None) -> pa.Table:
    """The table's lake schema, its types cast from the file's; every row with its Kafka coordinates. A value
    that does not fit is the file's fault when it was written under ``contract``, and the type change's when
    under an earlier version (``written``)."""
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
        except pa.ArrowException as exc:
            _raise_if_memory(exc)
            if written is not None and written < contract.version:
                raise EarlierTypeError(
                    path,
                    f"written under contract version {written}, its column {field.name} does not fit the "
                    f"{field.type} of version {contract.version} ({exc}): the column's type changed in a way "
                    "bronze cannot take; undo the change, or rebuild the table's bronze",
                ) from None
            raise CorruptFileError(path, f"column {field.name} does not fit {field.type}: {exc}") from None
    rows = pa.Table.from_arrays(columns, schema=schema)
    without = {c: rows.column(c).null_count for c in COORDINATES if rows.column(c).null_count}
    if without:
        raise CorruptFileError(path, f"rows without their Kafka coordinates (null values per column: {without})")
    return rows


def with_lake_file(table: pa.Table, path: str) -> pa.Table:
    """A file's rows, each tagged with the file it came from (``_lake_file``)."""
    return table.append_column("_lake_file", pa.array([path] * table.num_rows, pa.string()))
