"""How many bytes a Parquet file's pages declare once decompressed, read in Python from the file's bytes.

A native reader decompresses each page into a buffer of the size its page header declares, and a zstd page
of a few kilobytes can declare (and truly hold) two gigabytes: the footer's own totals may say otherwise,
since nothing checks them. The loader adds up what every page of every column chunk declares before it lets
pyarrow decode anything, so a file costs at most what it admits to. Python cannot crash on a malformed
file: anything unexpected is a :class:`MalformedParquetError`.

Only the few fields needed are read; every other field is skipped by its wire type (Thrift's compact
protocol, which Parquet's footer and page headers use).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["MalformedParquetError", "declared_page_bytes"]

_MAGIC = b"PAR1"
_MAX_DEPTH = 32  # Parquet's own structures nest a handful of levels deep
_MAX_FOOTER_BYTES = 64 << 20  # a lake file's footer takes kilobytes; reading more here would take minutes

# compact protocol wire types
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)


class MalformedParquetError(ValueError):
    """The bytes are not a Parquet file whose pages can be accounted for."""


class _Reader:
    """Compact-protocol values from ``data[position:end]``; every read is bounds-checked."""

    def __init__(self, data: bytes, position: int, end: int) -> None:
        self.data, self.position, self.end = data, position, end

    def byte(self) -> int:
        if self.position >= self.end:
            raise MalformedParquetError(f"a structure runs past its end at byte {self.end}")
        value = self.data[self.position]
        self.position += 1
        return value

    def varint(self) -> int:
        value = 0
        for shift in range(0, 70, 7):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise MalformedParquetError(f"a number longer than ten bytes at byte {self.position}")

    def integer(self) -> int:
        raw = self.varint()
        return (raw >> 1) ^ -(raw & 1)

    def skip_bytes(self, count: int) -> None:
        if count < 0 or self.position + count > self.end:
            raise MalformedParquetError(f"a value of {count} bytes runs past its end at byte {self.end}")
        self.position += count

    def fields(self) -> Iterator[tuple[int, int]]:
        """(field id, wire type) of a struct's fields, until its stop byte."""
        field_id = 0
        while True:
            header = self.byte()
            if header == 0:
                return
            kind, delta = header & 0x0F, header >> 4
            field_id = field_id + delta if delta else self.integer()
            yield field_id, kind

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise MalformedParquetError("structures nested too deep")
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.skip_bytes(1)
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.skip_bytes(8)
        elif kind == _BINARY:
            self.skip_bytes(self.varint())
        elif kind in (_LIST, _SET):
            size, element = self.list_header()
            for _ in range(size):
                self.skip_element(element, depth + 1)
        elif kind == _MAP:
            self.skip_map(depth + 1)
        elif kind == _STRUCT:
            for _, field_kind in self.fields():
                self.skip(field_kind, depth + 1)
        else:
            raise MalformedParquetError(f"unknown wire type {kind} at byte {self.position}")

    def list_header(self) -> tuple[int, int]:
        header = self.byte()
        size = header >> 4
        if size == 15:
            size = self.varint()
        if size > self.end - self.position:  # every element takes a byte at least
            raise MalformedParquetError(f"a list of {size} elements in {self.end - self.position} bytes")
        return size, header & 0x0F

    def skip_element(self, kind: int, depth: int) -> None:
        if kind in (_TRUE, _FALSE):  # in a list, a boolean is a byte of its own
            self.skip_bytes(1)
        else:
            self.skip(kind, depth)

    def skip_map(self, depth: int) -> None:
        size = self.varint()
        if size == 0:
            return
        if 2 * size > self.end - self.position:
            raise MalformedParquetError(f"a map of {size} entries in {self.end - self.position} bytes")
        kinds = self.byte()
        for _ in range(size):
            self.skip_element(kinds >> 4, depth)
            self.skip_element(kinds & 0x0F, depth)


@dataclass(frozen=True, slots=True)
class _Chunk:
    start: int
    length: int


def declared_page_bytes(data: bytes) -> int:
    """The decompressed bytes every page of every column chunk declares, added up.

    Raises :class:`MalformedParquetError` when the footer or a page header cannot be read, or a column chunk
    lies outside the file.
    """
    if len(data) < 12 or data[:4] != _MAGIC or data[-4:] != _MAGIC:
        raise MalformedParquetError("no Parquet magic bytes at both ends")
    footer_length = int.from_bytes(data[-8:-4], "little")
    footer_start = len(data) - 8 - footer_length
    if footer_start < 4:
        raise MalformedParquetError(f"a footer of {footer_length} bytes in a file of {len(data)}")
    if footer_length > _MAX_FOOTER_BYTES:
        raise MalformedParquetError(f"a footer of {footer_length:,} bytes, more than {_MAX_FOOTER_BYTES:,}")
    total = 0
    for chunk in _chunks(_Reader(data, footer_start, len(data) - 8)):
        if chunk.start < 4 or chunk.length < 0 or chunk.start + chunk.length > footer_start:
            raise MalformedParquetError(f"a column chunk at {chunk.start} (+{chunk.length}) lies outside the data")
        total += _page_bytes(_Reader(data, chunk.start, chunk.start + chunk.length))
    return total


def _chunks(footer: _Reader) -> Iterator[_Chunk]:
    """Every column chunk of every row group (FileMetaData.row_groups[].columns[].meta_data)."""
    for field_id, kind in footer.fields():
        if field_id != 4 or kind != _LIST:
            footer.skip(kind)
            continue
        groups, element = footer.list_header()
        if element != _STRUCT:
            raise MalformedParquetError("row groups that are not structures")
        for _ in range(groups):
            yield from _row_group_chunks(footer)


def _row_group_chunks(footer: _Reader) -> Iterator[_Chunk]:
    for field_id, kind in footer.fields():
        if field_id != 1 or kind != _LIST:
            footer.skip(kind)
            continue
        columns, element = footer.list_header()
        if element != _STRUCT:
            raise MalformedParquetError("column chunks that are not structures")
        for _ in range(columns):
            chunk = _column_chunk(footer)
            if chunk is not None:
                yield chunk


def _column_chunk(footer: _Reader) -> _Chunk | None:
    """ColumnChunk.meta_data: where its pages begin (dictionary page first, if any) and their length."""
    found: _Chunk | None = None
    for field_id, kind in footer.fields():
        if field_id == 3 and kind == _STRUCT:
            found = _column_meta(footer)
        else:
            footer.skip(kind)
    return found


def _column_meta(footer: _Reader) -> _Chunk:
    values: dict[int, int] = {}
    for field_id, kind in footer.fields():
        if field_id in (7, 9, 11) and kind == _I64:  # total_compressed_size, data / dictionary page offset
            values[field_id] = footer.integer()
        else:
            footer.skip(kind)
    if 7 not in values or 9 not in values:
        raise MalformedParquetError("a column chunk without its size or first page")
    dictionary = values.get(11, 0)
    start = dictionary if 0 < dictionary < values[9] else values[9]
    return _Chunk(start, values[7])


def _page_bytes(chunk: _Reader) -> int:
    """The decompressed sizes the pages of one column chunk declare (PageHeader fields 2 and 3)."""
    total = 0
    while chunk.position < chunk.end:
        uncompressed = compressed = -1
        for field_id, kind in chunk.fields():
            if field_id in (2, 3) and kind == _I32:
                value = chunk.integer()
                uncompressed, compressed = (value, compressed) if field_id == 2 else (uncompressed, value)
            else:
                chunk.skip(kind)
        if uncompressed < 0 or compressed < 0:
            raise MalformedParquetError(f"a page header without its sizes before byte {chunk.position}")
        chunk.skip_bytes(compressed)
        total += uncompressed
    return total
