"""A column that changed type in PostgreSQL: its refused values are schema mismatches, and bronze widens the
column in place when every old value fits the new type (both backends), or stops the table otherwise."""

from __future__ import annotations

import pyarrow as pa
import pytest
from google.cloud import bigquery

from services.common.debezium.records import DecodeFailure, Reason
from services.consumer.type_changes import relabel
from services.warehouse.bigquery.types import bigquery_widens
from services.warehouse.bronze import evolve, widens
from services.warehouse.duckdb.types import duckdb_type, duckdb_widens
from services.warehouse.errors import BronzeSchemaError
from tests.unit.test_json_decoder import CONTRACT, _decode, _event, _row


@pytest.mark.parametrize(
    ("old", "new", "widened"),
    [
        (pa.int16(), pa.int32(), True),
        (pa.int32(), pa.int64(), True),
        (pa.int64(), pa.int32(), False),
        (pa.int32(), pa.decimal128(10, 0), True),
        (pa.int32(), pa.decimal128(12, 3), False),  # 9 integer digits: not every int fits
        (pa.int64(), pa.decimal128(19, 0), True),
        (pa.int32(), pa.float64(), True),
        (pa.int64(), pa.float64(), False),  # beyond 2**53 a double rounds
        (pa.float32(), pa.float64(), True),
        (pa.float64(), pa.float32(), False),
        (pa.decimal128(7, 4), pa.decimal128(9, 6), True),
        (pa.decimal128(7, 4), pa.decimal128(9, 4), True),
        (pa.decimal128(7, 4), pa.decimal128(7, 6), False),  # fewer integer digits
        (pa.decimal128(7, 4), pa.decimal128(9, 2), False),  # fewer fraction digits: rounds
        (pa.decimal128(7, 4), pa.decimal256(60, 20), True),
        (pa.decimal128(7, 4), pa.int64(), False),
        (pa.list_(pa.int32()), pa.list_(pa.int64()), True),
        (pa.list_(pa.int64()), pa.list_(pa.int32()), False),
        (pa.int32(), pa.string(), False),
        (pa.string(), pa.int64(), False),
        (pa.timestamp("us"), pa.timestamp("us", tz="UTC"), False),
        (pa.date32(), pa.timestamp("us"), False),
    ],
)
def test_widens_only_when_every_old_value_is_exactly_a_new_one(
    old: pa.DataType, new: pa.DataType, widened: bool
) -> None:
    assert widens(old, new) is widened


def test_duckdb_types_widen_as_their_lake_types() -> None:
    assert duckdb_widens(duckdb_type(pa.decimal128(7, 4)), duckdb_type(pa.decimal128(9, 6)))
    assert duckdb_widens("INTEGER", "BIGINT")
    assert duckdb_widens("INTEGER[]", "DECIMAL(12,0)[]")
    assert duckdb_widens("REAL", "DOUBLE")
    assert not duckdb_widens("BIGINT", "INTEGER")
    assert not duckdb_widens("DECIMAL(20,2)", "VARCHAR")  # a decimal wider than DuckDB's: exact text, no cast
    assert not duckdb_widens("VARCHAR", "BIGINT")
    assert not duckdb_widens("TIMESTAMP", "TIMESTAMP WITH TIME ZONE")


def _numeric(precision: int | None = None, scale: int = 0, kind: str = "NUMERIC") -> bigquery.SchemaField:
    if precision is None:
        return bigquery.SchemaField("c", kind)
    return bigquery.SchemaField("c", kind, precision=precision, scale=scale)


def test_bigquery_types_widen_as_alter_column_set_data_type_allows() -> None:
    assert bigquery_widens(_numeric(7, 4), _numeric(9, 6))
    assert bigquery_widens(bigquery.SchemaField("c", "INT64"), _numeric(20, 0))
    assert bigquery_widens(bigquery.SchemaField("c", "INTEGER"), _numeric(kind="BIGNUMERIC"))  # legacy spelling
    assert bigquery_widens(_numeric(20, 2), _numeric(40, 4, "BIGNUMERIC"))
    assert bigquery_widens(_numeric(), _numeric(kind="BIGNUMERIC"))  # NUMERIC(38, 9) inside BIGNUMERIC(76, 38)
    assert not bigquery_widens(_numeric(9, 6), _numeric(7, 4))
    assert not bigquery_widens(bigquery.SchemaField("c", "INT64"), _numeric(12, 4))
    assert not bigquery_widens(_numeric(20, 2), bigquery.SchemaField("c", "STRING"))
    repeated = bigquery.SchemaField("c", "INT64", mode="REPEATED")
    assert not bigquery_widens(repeated, bigquery.SchemaField("c", "NUMERIC", mode="REPEATED"))


def test_evolve_adds_widens_and_refuses_any_other_type_change() -> None:
    existing = {"id": "BIGINT", "rate": "DECIMAL(7,4)", "name": "VARCHAR"}
    wanted = [("id", "BIGINT"), ("rate", "DECIMAL(9,6)"), ("name", "VARCHAR"), ("grade", "VARCHAR")]
    change = evolve("t", existing, wanted, changed=str.__ne__, describe=str, widens=duckdb_widens)
    assert (change.added, change.widened) == (["grade"], ["rate"])

    narrowed = [("id", "INTEGER"), ("rate", "DECIMAL(9,6)"), ("name", "BIGINT")]
    with pytest.raises(BronzeSchemaError) as refused:
        evolve("t", existing, narrowed, changed=str.__ne__, describe=str, widens=duckdb_widens)
    assert "id: BIGINT → INTEGER, name: VARCHAR → BIGINT" in str(refused.value)
    assert "rate" not in str(refused.value)


def _failures_of_a_changed_scale_and_a_broken_record() -> list[DecodeFailure]:
    scaled = _event("c", after=_row(1)).replace(b"12345678901234567.89", b"12.3456")
    return list(_decode([scaled, b"{not json"]).failures)


def test_values_a_type_change_explains_become_schema_mismatches() -> None:
    failures = _failures_of_a_changed_scale_and_a_broken_record()
    assert [f.reason for f in failures] == [Reason.DECIMAL_OVERFLOW, Reason.MALFORMED_JSON]

    relabelled = relabel(CONTRACT, failures, {"balance": "numeric(20,2) → numeric(20,4)"})
    assert [f.reason for f in relabelled] == [Reason.SCHEMA_MISMATCH, Reason.MALFORMED_JSON]
    changed = relabelled[0]
    assert changed.error_class == "TypeChanged"
    assert changed.detail.startswith("lending.accounts changed type in PostgreSQL (balance: numeric(20,2) → ")
    assert "contract v1 has the old type" in changed.detail
    assert failures[0].detail in changed.detail  # the reader's own words are kept
    assert changed.message is failures[0].message
    assert relabelled[1] is failures[1]


def test_a_value_out_of_range_in_a_column_that_did_not_change_keeps_its_reason() -> None:
    scaled = _event("c", after=_row(1)).replace(b"12345678901234567.89", b"12.3456")
    far_future = _event("c", after=_row(2, opened_on=3_000_000))  # beyond year 9999
    failures = list(_decode([scaled, far_future]).failures)
    assert [(f.reason, f.column) for f in failures] == [
        (Reason.DECIMAL_OVERFLOW, None),  # Arrow's reader does not say which column
        (Reason.OUT_OF_RANGE, "opened_on"),
    ]

    relabelled = relabel(CONTRACT, failures, {"balance": "numeric(20,2) → numeric(20,4)"})
    assert [f.reason for f in relabelled] == [Reason.SCHEMA_MISMATCH, Reason.OUT_OF_RANGE]
    assert "balance: numeric(20,2) → numeric(20,4)" in relabelled[0].detail
    assert relabelled[0].column is None  # the contract's own column: not a new one to add
    assert relabelled[1] is failures[1]


def test_nothing_changed_in_the_catalog_leaves_every_failure_as_it_was() -> None:
    failures = _failures_of_a_changed_scale_and_a_broken_record()
    assert relabel(CONTRACT, failures, {}) == failures
