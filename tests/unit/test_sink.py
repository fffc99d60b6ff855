"""The writer's sink: one file per hour folder of the records' own time, rows in offset order."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from services.common.debezium.json_batch import JsonEventDecoder
from services.common.kafka.message_columns import MessageBatch
from services.common.lake import LocalLake
from services.consumer.sink import SMALL_FILE_ROWS, ParquetSink
from tests.fixtures.lakefiles import LakeFiles, lending_contract, transaction_event

HOUR_US = 3_600_000_000
BASE_US = 1_795_000_000_000_000 - 1_795_000_000_000_000 % HOUR_US  # 2026-11-18 11:00 UTC


def _offsets(lake: LocalLake, path: str) -> list[int]:
    return [int(o) for o in pq.read_table(io.BytesIO(lake.read(path))).column("_kafka_offset").to_pylist()]


def test_a_batch_across_hours_is_one_file_per_hour_in_offset_order(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    hour_of = {10: 2, 11: 0, 12: 2, 13: 1, 14: 0, 15: 2}  # out of order, as a snapshot's old rows can be
    files = LakeFiles(
        lake,
        lending_contract("transactions"),
        event=lambda offset, ts: transaction_event(offset, ts_us=ts + hour_of[offset] * HOUR_US + 7),
    ).write(range(10, 16), ts_us=BASE_US)

    assert [(f.first_offset, f.rows) for f in files] == [(11, 2), (13, 1), (10, 3)]
    assert [_offsets(lake, f.file.path) for f in files] == [[11, 14], [13], [10, 12, 15]]
    assert [re.findall(r"/dt=[\d-]+/hour=\d+/", f.file.path) for f in files] == [
        ["/dt=2026-11-18/hour=11/"],
        ["/dt=2026-11-18/hour=12/"],
        ["/dt=2026-11-18/hour=13/"],
    ]


def test_a_batch_within_one_hour_is_one_file(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    files = LakeFiles(lake, lending_contract("transactions")).write(range(5, 9), ts_us=BASE_US + 5)
    assert [(f.first_offset, f.rows) for f in files] == [(5, 4)]
    assert _offsets(lake, files[0].file.path) == [5, 6, 7, 8]


def test_no_column_is_dictionary_encoded_nested_leaves_included(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    (file,) = LakeFiles(lake, lending_contract("transactions")).write(range(200), ts_us=BASE_US)
    row_group = pq.ParquetFile(io.BytesIO(lake.read(file.file.path))).metadata.row_group(0)
    encodings = {
        row_group.column(i).path_in_schema: row_group.column(i).encodings for i in range(row_group.num_columns)
    }
    assert "_unavailable_columns.list.element" in encodings
    dictionary = sorted(path for path, used in encodings.items() if {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & set(used))
    assert dictionary == []


def _codecs(lake: LocalLake, path: str) -> set[str]:
    metadata = pq.ParquetFile(io.BytesIO(lake.read(path))).metadata
    return {
        metadata.row_group(g).column(c).compression
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    }


def test_small_files_are_snappy_and_larger_ones_zstd(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    files = LakeFiles(lake, lending_contract("transactions"))
    (small,) = files.write(range(SMALL_FILE_ROWS - 1), ts_us=BASE_US)
    (large,) = files.write(range(SMALL_FILE_ROWS, 2 * SMALL_FILE_ROWS), ts_us=BASE_US)
    assert (small.rows, _codecs(lake, small.file.path)) == (SMALL_FILE_ROWS - 1, {"SNAPPY"})
    assert (large.rows, _codecs(lake, large.file.path)) == (SMALL_FILE_ROWS, {"ZSTD"})


def _decoded(offsets: range, ts_us: int) -> pa.Table:
    contract = lending_contract("transactions")
    topic = f"cdcflow.{contract.schema}.{contract.table}"
    messages = [
        Message(
            topic=topic,
            partition=0,
            offset=o,
            key=b"k",
            value=transaction_event(o, ts_us=ts_us),
            timestamp=(TIMESTAMP_CREATE_TIME, ts_us // 1000),
        )
        for o in offsets
    ]
    result = JsonEventDecoder(contract).decode(topic, MessageBatch.of(messages), ingested_at_us=BASE_US + 2 * HOUR_US)
    assert not result.failures
    return result.rows


def _with_micros(rows: pa.Table, name: str, micros: list[int | None]) -> pa.Table:
    index = rows.schema.get_field_index(name)
    return rows.set_column(
        index, rows.schema.field(index), pa.array(micros, pa.int64()).cast(rows.schema.field(index).type)
    )


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def test_no_event_time_an_int64_can_hold_makes_the_sink_raise(tmp_path: Path) -> None:
    """An event time outside years 1-9999 is never a folder: the next time of the record is used instead."""
    lake = LocalLake(tmp_path / "lake")
    rows = _decoded(range(4), BASE_US)
    rows = _with_micros(rows, "_source_ts", [INT64_MAX, INT64_MIN, 10**18, BASE_US])
    rows = _with_micros(rows, "_kafka_timestamp", [BASE_US + HOUR_US, INT64_MAX, INT64_MIN, None])
    files = ParquetSink(lake, "cdcflow").write("lending", "transactions", 0, rows)
    assert sorted(_offsets(lake, f.file.path) for f in files) == [[0], [1, 2], [3]]
    folders = {f.first_offset: re.findall(r"/dt=[\d-]+/hour=\d+/", f.file.path)[0] for f in files}
    assert folders == {
        3: "/dt=2026-11-18/hour=11/",  # its own source time
        0: "/dt=2026-11-18/hour=12/",  # the Kafka timestamp
        1: "/dt=2026-11-18/hour=13/",  # neither: when it was taken in
    }


def test_a_row_without_source_time_is_foldered_by_its_kafka_timestamp(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    rows = _with_micros(_decoded(range(3), BASE_US), "_source_ts", [BASE_US, None, BASE_US + 1])
    rows = _with_micros(rows, "_kafka_timestamp", [BASE_US + 2 * HOUR_US, BASE_US + HOUR_US, BASE_US + HOUR_US])
    files = ParquetSink(lake, "cdcflow").write("lending", "transactions", 0, rows)
    folders = {f.first_offset: re.findall(r"/hour=\d+/", f.file.path)[0] for f in files}
    assert [(f.first_offset, _offsets(lake, f.file.path)) for f in files] == [(0, [0, 2]), (1, [1])]
    assert folders == {0: "/hour=11/", 1: "/hour=12/"}
