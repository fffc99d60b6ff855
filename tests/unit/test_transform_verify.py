"""``cdcflow verify``'s comparison on rows held in memory.

The PostgreSQL and DuckDB readers run against the real stack in tests/integration/test_transform_verify.py.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console

from services.common.contracts import Column, TableContract
from services.common.settings import load_settings
from services.transform.verify import RowDifference, compare_table, print_report, verify, verify_warehouse

ACCOUNTS = TableContract(
    "bank",
    "accounts",
    (
        Column("account_id", "int64", "bigint", nullable=False),
        Column("region", "string", "text", nullable=False),
        Column("balance", "decimal", "numeric(20,2)", precision=20, scale=2),
        Column("opened_at", "timestamptz", "timestamp with time zone"),
    ),
    ("account_id", "region"),
)
_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass
class Table:
    """A reader over one table's rows in memory (or no table at all)."""

    data: list[tuple[Any, ...]] = field(default_factory=list)
    present: bool = True
    lookups: list[tuple[Any, ...]] = field(default_factory=list)
    names: frozenset[str] | None = None  # the table's columns; None: the contract's
    asked: list[tuple[str, ...]] = field(default_factory=list)  # the columns each rows() call was for

    def exists(self, contract: TableContract) -> bool:
        return self.present

    def columns(self, contract: TableContract) -> frozenset[str] | None:
        if not self.present:
            return None
        return self.names if self.names is not None else frozenset(c.name for c in contract.columns)

    def rows(self, contract: TableContract) -> Iterator[Sequence[Any]]:
        self.asked.append(tuple(c.name for c in contract.columns))
        yield from self.data

    def row(self, contract: TableContract, key: Sequence[Any]) -> Sequence[Any] | None:
        self.lookups.append(tuple(key))
        return next((r for r in self.data if r[:2] == tuple(key)), None)


def test_equal_tables_have_no_drift_whatever_the_spelling() -> None:
    auckland = _AT.astimezone(zoneinfo.ZoneInfo("Pacific/Auckland"))
    source = Table([(1, "eu", Decimal("10.50"), _AT), (2, "us", None, None)])
    silver = Table([(2, "us", None, None), (1, "eu", Decimal("10.5"), auckland)])
    result = compare_table(ACCOUNTS, source, silver)
    assert not result.drift
    assert (result.source_rows, result.silver_rows, result.first) == (2, 2, [])


def test_missing_extra_and_different_rows_are_counted_and_named() -> None:
    source = Table([(1, "eu", Decimal("1"), _AT), (2, "eu", Decimal("2"), _AT), (3, "eu", Decimal("3"), _AT)])
    silver = Table([(1, "eu", Decimal("1"), _AT), (2, "eu", Decimal("2.01"), _AT), (4, "eu", Decimal("4"), _AT)])
    result = compare_table(ACCOUNTS, source, silver)
    assert result.drift
    assert (result.missing, result.extra, result.different) == (1, 1, 1)
    assert result.first == [
        RowDifference(("3", "eu"), "missing"),
        RowDifference(("4", "eu"), "extra"),
        RowDifference(("2", "eu"), "different", ("balance",)),
    ]
    assert str(result.first[2]) == "different: (2, eu) (columns: balance)"
    assert source.lookups == silver.lookups == [(2, "eu")]  # raw key values, as the reader queries them


def test_a_composite_key_is_matched_on_all_its_columns() -> None:
    source = Table([(1, "eu", None, None), (1, "us", None, None)])
    silver = Table([(1, "us", None, None), (1, "eu", None, None)])
    assert not compare_table(ACCOUNTS, source, silver).drift
    result = compare_table(ACCOUNTS, source, Table([(1, "eu", None, None)]))
    assert result.first == [RowDifference(("1", "us"), "missing")]


def test_the_list_of_differences_is_limited_per_kind_but_the_counts_are_not() -> None:
    source = Table([(i, "eu", Decimal(i), None) for i in range(50)])
    silver = Table([(i, "eu", Decimal(i + 1), None) for i in range(10, 60)] + [(99, "us", None, None)])
    result = compare_table(ACCOUNTS, source, silver, limit=3)
    assert (result.missing, result.extra, result.different) == (10, 11, 40)
    assert [d.problem for d in result.first] == ["missing"] * 3 + ["extra"] * 3 + ["different"] * 3
    assert len(source.lookups) == 3


def test_a_missing_silver_table_is_drift_and_a_dropped_source_table_is_skipped() -> None:
    missing_silver = compare_table(ACCOUNTS, Table([(1, "eu", None, None)]), Table(present=False))
    assert missing_silver.drift
    assert missing_silver.error is not None
    assert "silver.accounts does not exist" in missing_silver.error
    dropped = compare_table(ACCOUNTS, Table(present=False), Table([(1, "eu", None, None)]))
    assert not dropped.drift
    assert dropped.skipped is not None


def test_a_table_the_transform_leaves_out_is_drift_saying_why() -> None:
    history = replace(ACCOUNTS, table="accounts_history")
    rows = [(1, "eu", Decimal("1.00"), _AT)]
    report = verify([ACCOUNTS, history], Table(rows), Table(rows))
    kept, left = report.tables
    assert (kept.table, kept.drift) == ("bank.accounts", False)
    assert left.table == "bank.accounts_history"
    assert left.drift
    assert left.error is not None
    assert left.error.startswith("left out of silver: silver.accounts_history is the history of bank.accounts")


def test_columns_dropped_in_postgresql_are_named_and_the_others_compared() -> None:
    contract = replace(ACCOUNTS, dropped=("balance",))
    source = Table([(1, "eu", _AT), (2, "us", None)], names=frozenset({"account_id", "region", "opened_at"}))
    silver = Table([(1, "eu", _AT), (2, "us", _AT)])
    result = compare_table(contract, source, silver)
    assert source.asked == silver.asked == [("account_id", "region", "opened_at")]  # balance left out on both sides
    assert (result.different, result.first) == (1, [RowDifference(("2", "us"), "different", ("opened_at",))])
    [(column, why)] = result.not_compared
    assert column == "balance"
    assert why.startswith("dropped in PostgreSQL")
    assert not compare_table(contract, source, Table([(1, "eu", _AT), (2, "us", None)])).drift


def test_a_column_postgresql_lost_after_the_contract_is_named_with_the_command_that_records_it() -> None:
    source = Table([(1, "eu", None)], names=frozenset({"account_id", "region", "opened_at"}))
    result = compare_table(ACCOUNTS, source, Table([(1, "eu", None)]))
    assert not result.drift
    [(column, why)] = result.not_compared
    assert column == "balance"
    assert "cdcflow schemas generate" in why


def test_a_column_excluded_after_it_was_captured_is_named_once_and_not_compared() -> None:
    contract = replace(ACCOUNTS, dropped=("balance",), uncaptured=(("balance", "excluded from capture"),))
    source = Table([(1, "eu", None)])  # PostgreSQL still has balance: the contract's every column
    result = compare_table(contract, source, Table([(1, "eu", None)]))
    assert source.asked == [("account_id", "region", "opened_at")]
    assert not result.drift
    assert result.not_compared == (("balance", "excluded from capture"),)


def test_a_key_column_postgresql_lost_is_drift() -> None:
    source = Table([("eu", None, None)], names=frozenset({"region", "balance", "opened_at"}))
    result = compare_table(ACCOUNTS, source, Table([(1, "eu", None, None)]))
    assert result.drift
    assert result.error == "primary key column(s) ['account_id'] are not in PostgreSQL"
    assert source.asked == []


def test_the_report_has_drift_when_any_table_has() -> None:
    other = TableContract("bank", "branches", ACCOUNTS.columns, ACCOUNTS.primary_key)
    equal = Table([(1, "eu", None, None)])
    report = verify([other, ACCOUNTS], equal, equal)
    assert [t.table for t in report.tables] == ["bank.accounts", "bank.branches"]
    assert not report.drift
    assert verify([ACCOUNTS], equal, Table()).drift


def test_generated_columns_are_listed_as_not_compared() -> None:
    with_generated = TableContract(
        "bank", "accounts", ACCOUNTS.columns, ACCOUNTS.primary_key, uncaptured=(("in_cents", "generated column"),)
    )
    equal = Table([(1, "eu", None, None)])
    (result,) = verify([with_generated], equal, equal).tables
    assert result.not_compared == (("in_cents", "generated column"),)
    assert not result.drift
    console = Console(record=True, width=200)
    print_report(verify([with_generated], equal, equal), console)
    assert "not compared: in_cents — generated column" in console.export_text()


def test_a_table_of_a_source_without_connector_is_listed_as_not_compared(tmp_path: Path) -> None:
    settings = load_settings(
        {"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path), "CDCFLOW_STACK__STATE_DIR": str(tmp_path / "state")}
    )
    ghost = replace(ACCOUNTS, source="ghost")
    (result,) = verify_warehouse(settings, [ghost], every_captured=False).tables
    assert result.table == "ghost/bank.accounts"
    assert result.silver == "silver.ghost__accounts"
    assert result.skipped is not None
    assert "topic prefix 'ghost'" in result.skipped
