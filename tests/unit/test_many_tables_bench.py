"""The many-tables benchmark's tables, lake files, trickle and goals."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from bench.many_tables_bench import PARTITIONS, ChangeLog, Trickle, goals, table_contracts, trickle_files
from services.common.lake import LakeLayout, LocalLake
from services.common.settings import WriterSettings
from services.transform.silver import model_name, render


def test_the_tables_are_the_lending_tables_then_copies_under_new_names() -> None:
    contracts = table_contracts(50)
    names = [c.qualified_name for c in contracts]
    assert names[:4] == ["lending.customers", "lending.facilities", "lending.transactions", "lending.customers_03"]
    assert len(set(names)) == 50
    assert Counter(c.primary_key for c in contracts) == {
        ("customer_id",): 17,
        ("facility_id",): 17,
        ("transaction_id",): 16,
    }
    assert len({model_name(c) for c in contracts}) == 50
    render(contracts)  # silver can be generated for every one of them


def test_a_change_log_writes_every_shape_in_the_writers_layout_without_shared_keys(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path)
    log = ChangeLog(lake, Counter())
    contracts = table_contracts(3)
    for contract in contracts:
        log.write(contract, 0)
        log.write(contract, 0)
        log.write(contract, 1)
    log.change(contracts[2])  # its 4th file: partitions in turn
    files = sorted(f.path for f in lake.list())
    slots = [LakeLayout.parse(path) for path in files]
    assert Counter(s.qualified_table for s in slots) == {
        "lending.customers": 3,
        "lending.facilities": 3,
        "lending.transactions": 4,
    }
    assert Counter(s.partition for s in slots if s.qualified_table == "lending.transactions") == {0: 2, 1: 1, 3: 1}
    customers = [pq.read_table(tmp_path / p) for p, s in zip(files, slots, strict=True) if s.table == "customers"]
    keys = [k for table in customers for k in table.column("customer_id").to_pylist()]
    assert len(keys) == len(set(keys)) == 15  # another partition's keys never repeat a partition's
    assert set(customers[0].column("status").to_pylist()) <= {"ACTIVE", "INACTIVE", "SUSPENDED"}


def test_a_trickle_staggers_tables_and_spreads_keys_over_partitions() -> None:
    trickle = Trickle(tables=4, partitions=PARTITIONS, every_s=5.0)
    changes = list(trickle.changes())
    assert len(changes) == 4 * 720
    assert [t for t, _, _ in changes] == sorted(t for t, _, _ in changes)
    assert changes[:4] == [(0.0, 0, 0), (1.25, 1, 0), (2.5, 2, 0), (3.75, 3, 0)]
    spread = Counter(trickle.partition(key) for _, table, key in changes if table == 0)
    assert set(spread) == set(range(PARTITIONS))
    assert min(spread.values()) > 720 / PARTITIONS / 2


def test_files_follow_the_age_of_each_partitions_buffer(tmp_path: Path) -> None:
    writer = WriterSettings()
    one = trickle_files(LocalLake(tmp_path / "one"), Trickle(2, 1, every_s=10.0), writer)
    # a buffer opens at a change and is flushed 30 s later; the next change comes within 10 s
    assert 3600 / 40 <= one["files_per_table_hour"] <= 3600 / 30
    assert one["minimum_files_per_table_hour"] == 120
    three = trickle_files(LocalLake(tmp_path / "three"), Trickle(2, 3, every_s=10.0), writer)
    assert three["files_per_table_hour"] > 1.5 * one["files_per_table_hour"]  # each partition flushes on its own
    assert three["vs_minimum"] == pytest.approx(three["files_per_table_hour"] / 120, abs=0.01)
    by_rows = trickle_files(
        LocalLake(tmp_path / "rows"), Trickle(1, 1, every_s=10.0), writer.model_copy(update={"flush_max_rows": 2})
    )
    assert by_rows["files_per_table_hour"] == 180  # two changes come within the age: rows flush first
    assert by_rows["rows_per_file"] == 2


def _steps(cycle_cpu_s: float, step_cpu_s: float) -> dict[str, Any]:
    step = {"loader_cycle_cpu_s": cycle_cpu_s, "step_s": step_cpu_s, "step_cpu_s": step_cpu_s}
    return {"full_build": {"wall_s": 30.0}, "silver_steps": {"changed_1": step, "changed_5": step}}


def _cycles(idle: float, one: float, five: float) -> dict[str, float]:
    return {"idle_cycle_s": idle, "idle_cycle_cpu_s": idle, "changed_1_cycle_cpu_s": one, "changed_5_cycle_cpu_s": five}


def test_the_goals_compare_each_changed_count_with_the_baseline() -> None:
    many = {**_cycles(0.02, 0.12, 0.6), "changed_50_cycle_cpu_s": 6.0}
    met = goals({"50": many, "5": _cycles(0.01, 0.1, 0.5)}, {"50": _steps(0.1, 0.4), "5": _steps(0.1, 0.4)}, 50, 5)
    assert met["idle_cycle_under_1s"]
    assert met["loader_cost_follows_changed_tables"]
    assert met["loader_cpu_vs_baseline"] == {"changed_1": 1.2, "changed_5": 1.2}
    assert met["idle_cycle_cpu_vs_baseline"] == 2.0
    assert met["silver_step_follows_changed_tables"]
    assert met["loader_beside_transform_follows_changed_tables"]
    assert met["all_changed_vs_one_changed"] == 50.0
    assert met["full_build_vs_one_table_step"] == 75.0
    missed = goals(
        {"50": {**many, "idle_cycle_s": 1.4, "changed_5_cycle_cpu_s": 0.9}, "5": _cycles(0.01, 0.1, 0.5)},
        {"50": _steps(0.2, 1.2), "5": _steps(0.1, 0.4)},
        50,
        5,
    )
    assert not missed["idle_cycle_under_1s"]
    assert not missed["loader_cost_follows_changed_tables"]
    assert missed["silver_step_cpu_vs_baseline"] == {"changed_1": 3.0, "changed_5": 3.0}
    assert not missed["silver_step_follows_changed_tables"]
    assert not missed["loader_beside_transform_follows_changed_tables"]
