"""Against real lake files from the writer: bronze in DuckDB holds every Kafka coordinate exactly once."""

from __future__ import annotations

import io
import os
import random
import resource
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.common.settings import Settings, load_settings
from services.common.signals import Shutdown
from services.loader.wiring import run_loader
from services.stack.workload import Workload
from tests.fixtures.pipeline import (
    WriterProcess,
    partition_ends,
    read_lake_table,
    wait_until,
    wait_until_committed,
    with_tests_importable,
)

Conn = psycopg.Connection[tuple[object, ...]]
TABLES = ("customers", "facilities", "transactions")


def _loader_env(writer: WriterProcess, warehouse: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CDCFLOW_LAKE__ROOT": str(writer.lake_root),
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(warehouse),
        "CDCFLOW_LOADER__HEALTH_PORT": "0",
        "CDCFLOW_LOG__FORMAT": "json",
    }


def _load_once(writer: WriterProcess, warehouse: Path) -> int:
    return run_loader(load_settings(_loader_env(writer, warehouse)), Shutdown(), once=True)


def _drain(settings: Settings, writer: WriterProcess) -> None:
    """Run the writer until its group has committed the end of every captured topic, then stop it."""
    proc = writer.start()
    ends = partition_ends(settings, [f"{settings.kafka.topic_prefix}.lending.{t}" for t in TABLES])
    wait_until_committed(settings, writer.group, ends)
    assert writer.terminate(proc) == 0


def _bronze(warehouse: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _lake_coordinates(writer: WriterProcess, prefix: str, table: str) -> set[tuple[str, int, int]]:
    rows = read_lake_table(writer.lake_root, prefix, f"lending.{table}")
    return set(
        zip(*(rows.column(c).to_pylist() for c in ("_kafka_topic", "_kafka_partition", "_kafka_offset")), strict=True)
    )


def _assert_bronze_equals_lake(writer: WriterProcess, warehouse: Path, prefix: str) -> None:
    for table in TABLES:
        expected = _lake_coordinates(writer, prefix, table)
        rows = _bronze(warehouse, f"select _kafka_topic, _kafka_partition, _kafka_offset from bronze.lending__{table}")
        assert len(rows) == len(set(rows)), f"a coordinate is in bronze.lending__{table} twice"
        assert set(rows) == expected, table


@pytest.fixture
def lake_with_changes(settings: Settings, pg: Conn, writer: WriterProcess) -> WriterProcess:
    Workload(settings.postgres, seed=11).run(rate=400, duration_s=3)
    _drain(settings, writer)
    return writer


def test_loading_twice_and_overwritten_files_keep_every_change_once(
    settings: Settings, lake_with_changes: WriterProcess, tmp_path: Path
) -> None:
    writer, warehouse, prefix = lake_with_changes, tmp_path / "wh.duckdb", settings.kafka.topic_prefix
    assert _load_once(writer, warehouse) == 0
    _assert_bronze_equals_lake(writer, warehouse, prefix)
    first = _bronze(warehouse, "select count(*), count(distinct _load_id) from bronze.lending__transactions")

    assert _load_once(writer, warehouse) == 0  # nothing new: nothing changes
    assert _bronze(warehouse, "select count(*), count(distinct _load_id) from bronze.lending__transactions") == first

    # the writer's crash case: a file rewritten with different content under the same name
    files = sorted((writer.lake_root / prefix / "lending.transactions").rglob("*.parquet"))
    assert len(files) >= 2
    rows = pq.read_table(files[0])
    rewritten = rows.slice(0, max(1, rows.num_rows // 2))  # cut differently
    buffer = io.BytesIO()
    pq.write_table(rewritten, buffer)
    files[0].write_bytes(buffer.getvalue())
    manifest_before = int(str(_bronze(warehouse, "select count(*) from bronze._cdcflow_load_manifest")[0][0]))
    assert _load_once(writer, warehouse) == 0
    manifest_after = int(str(_bronze(warehouse, "select count(*) from bronze._cdcflow_load_manifest")[0][0]))
    assert manifest_after == manifest_before + 1  # the new version was loaded (and its rows deduplicated)
    counts = _bronze(
        warehouse,
        "select count(*), count(distinct (_kafka_partition, _kafka_offset)) from bronze.lending__transactions",
    )
    assert counts[0][0] == counts[0][1] == first[0][0]


def test_kill_9_between_staging_and_commit(
    settings: Settings, lake_with_changes: WriterProcess, tmp_path: Path
) -> None:
    writer, warehouse = lake_with_changes, tmp_path / "wh.duckdb"
    env = with_tests_importable(_loader_env(writer, warehouse))
    loader = [sys.executable, "-m", "tests.fixtures.crashing_loader", "--once"]
    crashed = subprocess.run(loader, env=env, check=False, timeout=120)
    assert crashed.returncode == -signal.SIGKILL
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        staging = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'staging'"
        ).fetchone()
        manifest = conn.execute("select count(*) from bronze._cdcflow_load_manifest").fetchone()
    assert staging == (1,)  # left behind by the crash
    assert manifest == (0,)  # nothing was committed
    assert _load_once(writer, warehouse) == 0
    _assert_bronze_equals_lake(writer, warehouse, settings.kafka.topic_prefix)
    assert _bronze(warehouse, "select count(*) from information_schema.tables where table_schema = 'staging'") == [(0,)]


def test_a_corrupt_file_is_set_aside_and_the_rest_loads(
    settings: Settings, lake_with_changes: WriterProcess, tmp_path: Path
) -> None:
    writer, warehouse, prefix = lake_with_changes, tmp_path / "wh.duckdb", settings.kafka.topic_prefix
    folder = next((writer.lake_root / prefix / "lending.customers").rglob("*.parquet")).parent
    (folder / "p0-99999999999999999999.parquet").write_bytes(b"PAR1 this is not parquet")
    assert _load_once(writer, warehouse) == 0
    _assert_bronze_equals_lake(writer, warehouse, prefix)
    failed = list((writer.lake_root / "_failed").rglob("p0-99999999999999999999.parquet*"))
    assert sorted(p.name for p in failed) == [
        "p0-99999999999999999999.parquet",
        "p0-99999999999999999999.parquet.reason.txt",
    ]
    assert "not readable as Parquet" in next(p for p in failed if p.suffix == ".txt").read_text()


# --- hostile files: each one is set aside with its reason, and nothing else is held up ---------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Thrift:
    """A struct in Thrift's compact protocol, as Parquet's footer and page headers are written."""

    def __init__(self) -> None:
        self._bytes = bytearray()
        self._last_field = 0

    def _field(self, field_id: int, kind: int) -> None:
        self._bytes.append((field_id - self._last_field) << 4 | kind)
        self._last_field = field_id

    def number(self, field_id: int, value: int, *, kind: int = 5) -> _Thrift:  # 5: i32, 6: i64
        self._field(field_id, kind)
        self._bytes += _varint((value << 1) ^ (value >> 63))
        return self

    def blob(self, field_id: int, value: bytes) -> _Thrift:
        self._field(field_id, 8)
        self._bytes += _varint(len(value)) + value
        return self

    def child(self, field_id: int, value: _Thrift) -> _Thrift:
        self._field(field_id, 12)
        self._bytes += value.end()
        return self

    def items(self, field_id: int, items: list[_Thrift] | list[int] | list[bytes]) -> _Thrift:
        self._field(field_id, 9)
        kind = 12 if isinstance(items[0], _Thrift) else 5 if isinstance(items[0], int) else 8
        self._bytes.append(len(items) << 4 | kind)
        for item in items:
            if isinstance(item, _Thrift):
                self._bytes += item.end()
            elif isinstance(item, int):
                self._bytes += _varint((item << 1) ^ (item >> 63))
            else:
                self._bytes += _varint(len(item)) + item
        return self

    def end(self) -> bytes:
        return bytes(self._bytes) + b"\0"


def _crafted_parquet(
    offset: int,
    *,
    rows: int = 1,
    page: bytes | None = None,
    page_bytes: int | None = None,
    codec: int = 0,
    name: bytes = b"_kafka_offset",
) -> bytes:
    """One row of Kafka coordinates, written by hand so that what it declares can be chosen.

    ``rows`` is the row count the footer declares; the offset column's page holds ``page`` (default: the
    offset, PLAIN) compressed with ``codec`` (0 none, 6 zstd) and declares ``page_bytes`` once decompressed;
    ``name`` is the offset column's name. The footer's own size totals always tell the compressed truth.
    """
    columns = [  # name, physical type (1 INT32, 2 INT64, 6 BYTE_ARRAY), UTF8 or not, stored bytes
        (b"_kafka_topic", 6, True, struct.pack("<I", 6) + b"hostil"),
        (b"_kafka_partition", 1, False, struct.pack("<i", 0)),
        (name, 2, False, struct.pack("<q", offset) if page is None else page),
    ]
    chunks, column_chunks = bytearray(), []
    for column, physical, _, data in columns:
        position = 4 + len(chunks)  # after the leading magic
        declared = page_bytes if page_bytes is not None and column == name else len(data)
        data_page = _Thrift().number(1, 1).number(2, 0).number(3, 3).number(4, 3)  # 1 value, PLAIN, RLE levels
        page = _Thrift().number(1, 0).number(2, declared).number(3, len(data)).child(5, data_page).end() + data
        meta = (
            _Thrift()
            .number(1, physical)
            .items(2, [0, 3])
            .items(3, [column])
            .number(4, codec if column == name else 0)
            .number(5, 1, kind=6)
            .number(6, len(page), kind=6)
            .number(7, len(page), kind=6)
            .number(9, position, kind=6)
        )
        column_chunks.append(_Thrift().number(2, position, kind=6).child(3, meta))
        chunks += page
    schema = [_Thrift().blob(4, b"schema").number(5, len(columns))]
    for column, physical, utf8, _ in columns:
        element = _Thrift().number(1, physical).number(3, 0).blob(4, column)
        schema.append(element.number(6, 0) if utf8 else element)
    group = _Thrift().items(1, column_chunks).number(2, len(chunks), kind=6).number(3, rows, kind=6)
    footer = _Thrift().number(1, 1).items(2, schema).number(3, rows, kind=6).items(4, [group]).end()
    return b"PAR1" + bytes(chunks) + footer + struct.pack("<I", len(footer)) + b"PAR1"


def _zeros_zstd(size: int) -> bytes:
    """``size`` zero bytes as zstd frames: a few kilobytes."""
    frame = 64 << 20
    whole = pa.compress(b"\0" * frame, codec="zstd", asbytes=True)
    rest = pa.compress(b"\0" * (size % frame), codec="zstd", asbytes=True)
    return bytes(whole) * (size // frame) + bytes(rest)


def _parquet(table: pa.Table, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def _replaced(table: pa.Table, name: str, column: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, column)


def _invalid_utf8(count: int) -> pa.Array:
    """Strings whose bytes are not UTF-8 (Arrow checks that only when asked)."""
    offsets = struct.pack(f"<{count + 1}i", *(2 * i for i in range(count + 1)))
    return pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(b"\xff\xfe" * count)])


def _dictionary_bomb(template: pa.Table, text: str, rows: int, value_bytes: int) -> pa.Table:
    """``rows`` rows whose column ``text`` all point at one ``value_bytes`` string: kilobytes on disk, far
    more than memory once every row has its own copy."""
    one_row = template.slice(0, 1)
    bomb = {name: pa.nulls(rows, one_row.schema.field(name).type) for name in one_row.column_names}
    bomb["_kafka_topic"] = pa.array([one_row.column("_kafka_topic")[0].as_py()] * rows, pa.string())
    bomb["_kafka_partition"] = pa.array(np.zeros(rows, dtype=np.int32))
    bomb["_kafka_offset"] = pa.array(np.arange(10**12, 10**12 + rows, dtype=np.int64))
    bomb[text] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array(["n" * value_bytes]))
    return pa.table(bomb)


def _hostile_files(real: bytes) -> dict[str, tuple[bytes, str]]:
    """Name → (file, what its reason must say), each built from a real lake file of the writer."""
    table = pq.read_table(io.BytesIO(real))
    text = next(f.name for f in table.schema if pa.types.is_string(f.type) and not f.name.startswith("_"))
    footer_length = int.from_bytes(real[-8:-4], "little")
    footer_start = len(real) - 8 - footer_length
    garbage = random.Random(7).randbytes(footer_length)
    null_offset = pa.array([None, *table.column("_kafka_offset").to_pylist()[1:]], pa.int64())
    struct_column = pa.StructArray.from_arrays([pa.array(range(table.num_rows))], names=["oops"])
    not_utf8 = _invalid_utf8(table.num_rows)
    not_parquet = "not readable as Parquet"
    return {
        "garbage-footer": (real[:footer_start] + garbage + real[-8:], not_parquet),
        "truncated": (real[: len(real) // 2], not_parquet),
        "footer-length-2GiB": (real[:-8] + struct.pack("<I", 2**31 - 1) + b"PAR1", not_parquet),
        "rows-2^40": (_crafted_parquet(10**13, rows=2**40), "declares"),
        "zstd-page-of-2GiB": (
            _crafted_parquet(10**13 + 1, page=_zeros_zstd(2**31 - 1), page_bytes=2**31 - 1, codec=6),
            "declares",
        ),
        "column-name-not-utf8": (_crafted_parquet(10**13 + 2, name=b"\xff\xfe"), not_parquet),
        "offset-as-text": (_parquet(_replaced(table, "_kafka_offset", pa.array(["x"] * table.num_rows))), "fit"),
        "struct-for-text": (_parquet(_replaced(table, text, struct_column)), "fit"),
        "null-coordinate": (_parquet(_replaced(table, "_kafka_offset", null_offset)), "Kafka coordinates"),
        "repeated-column": (_parquet(table.append_column(text, table.column(text))), "repeat"),
        "text-not-utf8": (_parquet(_replaced(table, text, not_utf8)), "UTF"),
        "dictionary-bomb": (_parquet(_dictionary_bomb(table, text, 100_000, 512 << 10), compression="zstd"), "decodes"),
    }


LOADER_ADDRESS_SPACE = 4 << 30  # the loader needs about 1 GiB here, pyarrow and DuckDB keep some of what they free


def _load_once_in_bounded_memory(writer: WriterProcess, warehouse: Path) -> subprocess.CompletedProcess[str]:
    """``python -m services.loader --once`` with its address space bounded: a file that makes the loader
    allocate without limit fails this test instead of waking the machine's OOM killer."""

    def bound_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LOADER_ADDRESS_SPACE, LOADER_ADDRESS_SPACE))

    return subprocess.run(
        [sys.executable, "-m", "services.loader", "--once"],
        env=_loader_env(writer, warehouse),
        preexec_fn=bound_memory,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_hostile_files_are_set_aside_each_with_its_reason_and_the_rest_loads(
    settings: Settings, lake_with_changes: WriterProcess, tmp_path: Path
) -> None:
    writer, warehouse, prefix = lake_with_changes, tmp_path / "wh.duckdb", settings.kafka.topic_prefix
    real = next((writer.lake_root / prefix / "lending.customers").rglob("*.parquet"))
    hostile = _hostile_files(real.read_bytes())
    names = {}
    for number, (case, (data, _)) in enumerate(sorted(hostile.items())):
        name = f"p0-{99999999999999999000 + number:020d}.parquet"  # after every real file of the folder
        (real.parent / name).write_bytes(data)
        names[case] = name

    loaded = _load_once_in_bounded_memory(writer, warehouse)
    assert loaded.returncode == 0, loaded.stdout[-4000:] + loaded.stderr[-4000:]
    _assert_bronze_equals_lake(writer, warehouse, prefix)
    failed = writer.lake_root / "_failed" / real.parent.relative_to(writer.lake_root)
    reasons = {
        case: (failed / f"{name}.reason.txt").read_text() for case, name in names.items() if (failed / name).exists()
    }
    assert sorted(reasons) == sorted(hostile), f"not set aside: {sorted(set(hostile) - set(reasons))}"
    unclear = {case: reasons[case] for case, (_, says) in hostile.items() if says not in reasons[case]}
    assert not unclear, unclear


def test_added_column_reaches_bronze(
    settings: Settings, pg: Conn, writer: WriterProcess, new_table: str, tmp_path: Path
) -> None:
    prefix, warehouse = settings.kafka.topic_prefix, tmp_path / "wh.duckdb"
    pg.execute(f"insert into lending.{new_table} values (1, 1.50)".encode())
    proc = writer.start()
    wait_until("v1 rows", lambda: read_lake_table(writer.lake_root, prefix, f"lending.{new_table}").num_rows == 1)
    assert _load_once(writer, warehouse) == 0
    pg.execute(f"alter table lending.{new_table} add column note text".encode())
    pg.execute(f"insert into lending.{new_table} values (2, 2.50, 'two')".encode())
    wait_until("v2 rows", lambda: read_lake_table(writer.lake_root, prefix, f"lending.{new_table}").num_rows == 2)
    writer.terminate(proc)
    assert _load_once(writer, warehouse) == 0
    rows = _bronze(warehouse, f"select id, amount, note from bronze.lending__{new_table} order by id")
    assert [(r[0], str(r[1]), r[2]) for r in rows] == [(1, "1.50", None), (2, "2.50", "two")]
