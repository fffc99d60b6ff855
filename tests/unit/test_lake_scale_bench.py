"""The large-lake benchmark's lake: real lake files in the writer's layout, each slot written once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.lake_scale_bench import FILES_PER_HOUR, PARTITIONS, ROWS_PER_FILE, Slot, UnsyncedLake, lay_down
from services.common.lake import LakeLayout, LocalLake, UnsafePathError


def test_files_follow_the_writers_layout_and_a_second_call_adds_new_names(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path)
    count = PARTITIONS * FILES_PER_HOUR + 7  # every partition fills one hour; seven files open the next
    assert lay_down(lake, 0, count) == count
    assert lay_down(lake, count, 5) == 5  # the new files of a measured cycle
    files = list(lake.list())
    slots = [LakeLayout.parse(f.path) for f in files]
    assert len(files) == count + 5
    assert Counter(s.partition for s in slots) == Counter(Slot(i).partition for i in range(count + 5))
    per_folder = Counter((s.partition, s.dt, s.hour) for s in slots)
    assert max(per_folder.values()) == FILES_PER_HOUR
    assert len(per_folder) == 2 * PARTITIONS  # each partition: a full hour, then the next one
    for slot in slots:
        assert slot.last_offset == slot.first_offset + ROWS_PER_FILE - 1
        assert slot.first_offset % ROWS_PER_FILE == 0
    table = pq.read_table(tmp_path / files[0].path)
    assert table.num_rows == ROWS_PER_FILE
    assert table.column("_kafka_offset").to_pylist() == list(
        range(slots[0].first_offset, slots[0].first_offset + ROWS_PER_FILE)
    )


def test_a_partitions_files_hold_consecutive_offsets_and_hours() -> None:
    partition_zero = [Slot(i) for i in range(0, 3 * PARTITIONS * FILES_PER_HOUR, PARTITIONS)]
    assert {s.partition for s in partition_zero} == {0}
    offsets = [o for s in partition_zero for o in s.offsets]
    assert offsets == list(range(len(partition_zero) * ROWS_PER_FILE))
    hours = [s.ts_us // 3_600_000_000 for s in partition_zero]
    assert hours == sorted(hours)
    assert Counter(hours).most_common(1)[0][1] == FILES_PER_HOUR
    assert Slot(1).partition == 1
    assert Slot(1).offsets == Slot(0).offsets  # each partition counts its own offsets


def test_the_unsynced_lake_writes_what_the_local_lake_lists(tmp_path: Path) -> None:
    lake = UnsyncedLake(tmp_path)
    assert lay_down(lake, 0, 3) == 3
    listed = list(LocalLake(tmp_path).list())
    assert len(listed) == 3
    again = lake.write(listed[0].path, b"rewritten")
    assert again in list(LocalLake(tmp_path).list())
    assert again.version != listed[0].version
    with pytest.raises(UnsafePathError):
        lake.write("../outside.parquet", b"x")
