"""The file-size benchmark's figures, the rows a pass writes and the files a pass makes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.file_size_bench import file_size_figures, pass_rows, write_pass
from services.common.lake.local import LocalLake


def test_each_size_against_the_largest_and_what_a_file_adds() -> None:
    figures = file_size_figures(10_000, {10_000: 0.010, 100: 0.030}, {10_000: 0.004, 100: 0.012})
    assert figures["baseline_rows_per_file"] == 10_000
    base, small = figures["sizes"]
    assert (base["files_per_pass"], base["cpu_us_per_event"], base["vs_baseline"], base["added_ms_per_file"]) == (
        1,
        1.0,
        1.0,
        0.0,
    )
    assert (small["rows_per_file"], small["files_per_pass"]) == (100, 100)
    assert small["cpu_us_per_event"] == 3.0
    assert small["encode_us_per_event"] == 1.2
    assert small["cpu_ms_per_file"] == 0.3
    assert small["added_ms_per_file"] == 0.2  # 2 µs more per event, times 100 rows
    assert small["vs_baseline"] == 3.0


def test_a_size_beyond_the_pass_is_the_pass() -> None:
    figures = file_size_figures(700, {5_000: 0.001, 100: 0.002}, {5_000: 0.0, 100: 0.0})
    assert figures["baseline_rows_per_file"] == 700
    assert [s["files_per_pass"] for s in figures["sizes"]] == [1, 7]


def _decoded(rows: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "_kafka_offset": pa.array([7] * rows, pa.int64()),
            "_source_ts": pa.array([0] * rows, pa.timestamp("us", tz="UTC")),
        }
    )


def test_a_pass_repeats_the_rows_as_consecutive_offsets_of_one_hour() -> None:
    rows = pass_rows(_decoded(3), 8)
    assert rows.column("id").to_pylist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert rows.column("_kafka_offset").to_pylist() == list(range(8))
    assert len(set(rows.column("_source_ts").to_pylist())) == 1
    assert rows.schema == _decoded(1).schema
    with pytest.raises(SystemExit, match="no decoded rows"):
        pass_rows(_decoded(0), 8)


def test_a_pass_writes_every_row_once_in_files_of_the_size(tmp_path: Path) -> None:
    rows = pass_rows(_decoded(40), 250)
    _, files = write_pass(LocalLake(tmp_path), rows, 100)
    assert files == 3
    written = sorted(p for p in tmp_path.rglob("p0-*.parquet"))
    assert [pq.read_metadata(p).num_rows for p in written] == [100, 100, 50]
    read = pa.concat_tables([pq.read_table(p) for p in written])
    assert read.column("_kafka_offset").to_pylist() == list(range(250))
    assert len(list(tmp_path.rglob("p1-*.parquet"))) == 1  # the folder made first, outside the measurement
