"""Source columns named like the columns cdcflow adds: refused by name, or (a history's period) kept beside them.

The reserved names are checked against what the code adds — the lake writer's, the loader's, the silver
models' and silver's SQL's own columns — and a table whose columns are named like a history's period is built
by ``cdcflow transform``'s code path on a real DuckDB file, compared value by value with its bronze rows.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from services.common.contracts import LAKE_METADATA, Column, TableContract
from services.common.contracts.reserved import (
    HISTORY_PERIOD,
    LAKE_FOLDER_NAMES,
    SHADOWED_PERIOD,
    history_period,
    is_reserved,
    warehouse_limits,
    why_reserved,
)
from services.common.contracts.store import publish_contract
from services.common.lake import open_lake
from services.common.settings import load_settings, repo_root
from services.common.signals import Shutdown
from services.transform.silver import render_history, render_silver_yaml
from services.transform.wiring import run_transform
from services.warehouse.bigquery.types import HIVE_KEYS, refuse_unloadable_columns
from services.warehouse.bronze import LOADER_COLUMNS
from services.warehouse.errors import BronzeSchemaError
from tests.fixtures.customers_bronze import silver_env
from tests.fixtures.lakefiles import lending_contract

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TOPIC = "cdcflow.lending.price_periods"

# A price list as real schemas keep one: its own validity period, keyed by a column named like a WAL position.
PRICES = TableContract(
    "lending",
    "price_periods",
    (
        Column("lsn", "int64", "bigint", nullable=False),
        Column("valid_from", "date", "date"),
        Column("Valid_To", "date", "date"),
        Column("is_current", "boolean", "boolean"),
        Column("price", "decimal", "numeric(10,2)", precision=10, scale=2),
    ),
    ("lsn",),
)


def test_every_column_cdcflow_adds_is_reserved() -> None:
    added = [f.name for f in (*LAKE_METADATA, *LOADER_COLUMNS)]
    macro = (repo_root() / "dbt" / "macros" / "silver.sql").read_text()
    aliases = set(re.findall(r"\bas (_[a-z_]+)\b", macro))
    assert aliases, "no alias found: the pattern no longer reads the macro"
    assert [name for name in [*added, *sorted(aliases)] if not is_reserved(name)] == []


def test_every_silver_column_is_the_tables_own_reserved_or_a_period_column() -> None:
    def added(contract: TableContract) -> set[str]:
        models = yaml.safe_load(render_silver_yaml([contract]))["models"]
        assert len(models) == 2  # current state and history
        return {column["name"] for model in models for column in model["columns"]} - {c.name for c in contract.columns}

    plain, shadowed = added(lending_contract("customers")), added(PRICES)
    assert {n for n in plain if not is_reserved(n)} == set(HISTORY_PERIOD)
    assert {n for n in shadowed if not is_reserved(n)} == set()
    assert shadowed - plain == set(SHADOWED_PERIOD)


@pytest.mark.parametrize("name", ["_op", "_OP", "_Loaded_At", "_lake_file", "_order_lsn", "_valid_to"])
def test_a_name_cdcflow_adds_is_reserved_without_regard_to_case(name: str) -> None:
    assert is_reserved(name)


@pytest.mark.parametrize("name", ["op", "lsn", "valid_from", "is_current", "loaded_at", "dt", "hour"])
def test_a_name_cdcflow_does_not_add_is_free(name: str) -> None:
    assert not is_reserved(name)


def test_the_lake_folders_are_reserved_on_bigquery_alone() -> None:
    assert warehouse_limits("duckdb").why_refused("hour") is None
    assert warehouse_limits("bigquery").folders == LAKE_FOLDER_NAMES == tuple(name for name, _ in HIVE_KEYS)
    assert is_reserved("HOUR", warehouse_limits("bigquery"))


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Hour", "BigQuery's loads read the lake's folders as columns of that name"),
        ("_file_name", "BigQuery keeps column names starting with _FILE_ (without regard to case)"),
        ("_Partition_key", "BigQuery keeps column names starting with _PARTITION (without regard to case)"),
        ("_change_type", "BigQuery keeps column names starting with _CHANGE_TYPE"),
        ("__root__id", "BigQuery keeps column names starting with __ROOT__"),
        ("price$", "a BigQuery column name cannot hold '$'"),
    ],
)
def test_a_name_bigquery_refuses_is_reserved_there_alone(name: str, why: str) -> None:
    assert why in (why_reserved(name, warehouse_limits("bigquery")) or "")
    assert why_reserved(name, warehouse_limits("duckdb")) is None
    assert why_reserved(name) is None


@pytest.mark.parametrize(
    ("precision", "scale", "why"),
    [
        (76, 38, None),  # numeric without precision
        (40, 1, "more digits before the point"),
        (39, 1, None),
        (40, 39, "more digits after the point"),
        (76, 0, "more digits before the point"),
        (38, 38, None),
        (38, 0, None),
    ],
)
def test_bigquery_refuses_a_decimal_wider_than_bignumeric_alone(precision: int, scale: int, why: str | None) -> None:
    found = warehouse_limits("bigquery").why_unfit_decimal(precision, scale)
    assert (found is None) == (why is None)
    assert why is None or why in str(found)
    assert warehouse_limits("duckdb").why_unfit_decimal(precision, scale) is None


@pytest.mark.parametrize("name", ["file_name", "partition", "table_name", "_tablename", "row_timestamp", "dollars"])
def test_a_name_near_what_bigquery_refuses_is_free(name: str) -> None:
    assert why_reserved(name, warehouse_limits("bigquery")) is None


@pytest.mark.parametrize(
    ("column", "why"),
    [
        ("Hour", r"lending\.hourly\.Hour: BigQuery's loads read the lake's folders"),
        ("_TABLE_SUFFIX", r"lending\.hourly\._TABLE_SUFFIX: BigQuery keeps column names starting with _TABLE_"),
        ("cost$", r"lending\.hourly\.cost\$: a BigQuery column name cannot hold '\$'"),
    ],
)
def test_a_bigquery_bronze_refuses_a_contract_with_a_column_it_cannot_load(column: str, why: str) -> None:
    refuse_unloadable_columns(PRICES)  # nothing to refuse
    columns = (Column("id", "int64", "bigint"), Column(column, "int32", "int"))
    hourly = TableContract("lending", "hourly", columns, ("id",))
    with pytest.raises(BronzeSchemaError, match=why):
        refuse_unloadable_columns(hourly)


def test_a_history_takes_the_shadowed_period_when_a_column_is_named_like_one_of_its_columns() -> None:
    assert history_period(["id", "status"]) == HISTORY_PERIOD
    assert history_period(["id", "IS_CURRENT"]) == SHADOWED_PERIOD
    rendered = render_history(PRICES)
    assert '"period": {"from": "_valid_from", "to": "_valid_to", "current": "_is_current"}' in rendered
    assert '"period": {"from": "valid_from"' in render_history(lending_contract("customers"))


def _change(op: str, lsn: int, loaded: int, key: int | None, price: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "_op": op,
        "_source_lsn": lsn,
        "_source_ts": BASE + dt.timedelta(seconds=lsn),
        "_is_snapshot": False,
        "_unavailable_columns": [],
        "_kafka_topic": TOPIC,
        "_kafka_partition": 0,
        "_kafka_offset": lsn,
        "_kafka_timestamp": BASE + dt.timedelta(seconds=lsn),
        "_ingested_at": BASE,
        "_loaded_at": BASE + dt.timedelta(hours=loaded),
    }
    if key is not None:
        row["lsn"] = key
    if price is not None:  # the source's own period: the price list's, not the version's
        row |= {
            "valid_from": dt.date(2025, 1, key or 1),
            "Valid_To": dt.date(2025, 12, 31),
            "is_current": price == "2.00",
            "price": Decimal(price),
        }
    return row


def _load(path: Path, rows: list[dict[str, Any]]) -> None:
    with duckdb.connect(str(path)) as conn:
        for row in rows:
            names = ", ".join(f'"{n}"' for n in row)
            marks = ", ".join("?" for _ in row)
            conn.execute(f"insert into bronze.lending__price_periods ({names}) values ({marks})", list(row.values()))


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _build(env: dict[str, str]) -> int:
    models = ["price_periods", "price_periods_history"]
    return run_transform(load_settings(env), Shutdown(), once=True, select=models, exclude=["test_type:unit"])


def test_a_table_with_columns_named_like_the_period_keeps_them_and_its_history_works(tmp_path: Path) -> None:
    env = silver_env(tmp_path)
    settings = load_settings(env)
    lake = open_lake(settings.lake, settings.lake_root())
    publish_contract(lake, PRICES)
    lake.close()
    warehouse = tmp_path / "warehouse.duckdb"
    assert _build(env) == 0  # bronze created, silver empty
    _load(warehouse, [_change("c", 10, 1, 1, "1.00"), _change("c", 15, 1, 2, "5.00"), _change("u", 20, 1, 1, "2.00")])
    _load(warehouse, [_change("d", 30, 1, 2)])
    assert _build(env) == 0  # every dbt test of both models passes, one_current_version's on `_is_current`

    current = 'select lsn, valid_from, "Valid_To", is_current, price from silver.price_periods order by lsn'
    assert _rows(warehouse, current) == [(1, dt.date(2025, 1, 1), dt.date(2025, 12, 31), True, Decimal("2.00"))]
    history = (
        "select lsn, valid_from, is_current, price, _valid_from, _valid_to, _is_current"
        " from silver.price_periods_history order by lsn, _source_lsn"
    )
    at = {lsn: BASE + dt.timedelta(seconds=lsn) for lsn in (10, 15, 20, 30, 40)}
    assert _rows(warehouse, history) == [
        (1, dt.date(2025, 1, 1), False, Decimal("1.00"), at[10], at[20], False),
        (1, dt.date(2025, 1, 1), True, Decimal("2.00"), at[20], None, True),
        (2, dt.date(2025, 1, 2), False, Decimal("5.00"), at[15], at[30], False),
    ]

    _load(warehouse, [_change("t", 40, 2, None)])  # a truncate closes what is open, incrementally
    assert _build(env) == 0
    assert _rows(warehouse, current) == []
    assert _rows(warehouse, history)[1] == (1, dt.date(2025, 1, 1), True, Decimal("2.00"), at[20], at[40], False)
