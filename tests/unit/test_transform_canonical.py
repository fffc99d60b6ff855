"""Canonical values: the same value spelled by PostgreSQL (psycopg) and by DuckDB hashes the same."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from decimal import Decimal

import pytest

from services.common.contracts import Column
from services.common.contracts.model import Semantic
from services.transform.canonical import NULL, canonical, canonical_decimal, canonical_json, row_digest


def _column(semantic: Semantic, items: Column | None = None) -> Column:
    if semantic == "decimal":
        return Column("c", semantic, "numeric(20,2)", precision=20, scale=2)
    return Column("c", semantic, "x", items=items)


@pytest.mark.parametrize(
    ("postgres", "silver"),
    [
        (Decimal("1.50"), Decimal("1.5")),
        (Decimal("0.812259061"), "0.81225906100000000000000000000000000000"),  # bronze text of decimal(76, 38)
        (Decimal("0"), "0E-38"),  # Arrow writes a zero of scale 38 like this
        (Decimal("1E-30"), "1.00000000E-30"),  # and values below 1e-6 in scientific notation
        (Decimal("-123.5"), "-123.50000000000000000000000000000000000000"),
        (Decimal("100"), "100.000"),  # trailing zeros of the integer part stay
        (Decimal("-0.00"), "0"),
    ],
)
def test_decimals_compare_by_value_whatever_their_spelling(postgres: Decimal, silver: object) -> None:
    for semantic in ("decimal", "variable_decimal"):
        assert canonical(_column(semantic), postgres) == canonical(_column(semantic), silver)


def test_different_decimals_stay_different() -> None:
    assert canonical_decimal("1.5") != canonical_decimal("1.05")
    assert canonical_decimal("100") == "100"
    assert canonical_decimal(Decimal("1E+3")) == "1000"
    with pytest.raises(ValueError, match="not a decimal"):
        canonical_decimal("one")


def test_timestamps_with_time_zone_compare_as_instants() -> None:
    instant = dt.datetime(2026, 11, 22, 23, 30, 0, 1, tzinfo=dt.UTC)
    elsewhere = instant.astimezone(zoneinfo.ZoneInfo("Pacific/Auckland"))
    column = _column("timestamptz")
    assert canonical(column, instant) == canonical(column, elsewhere) == "2026-11-22T23:30:00.000001Z"
    assert canonical(column, instant) != canonical(column, instant + dt.timedelta(microseconds=1))


def test_timestamps_without_time_zone_keep_their_wall_time() -> None:
    wall = dt.datetime(2026, 3, 29, 2, 30)
    assert canonical(_column("timestamp"), wall) == "2026-03-29T02:30:00.000000"
    assert canonical(_column("timestamp_millis"), wall) == canonical(_column("timestamp"), wall)


def test_json_ignores_key_order_and_whitespace_but_not_values() -> None:
    postgres = '{"score": 612, "sector": "retail", "limits": [1.50, 2]}'
    silver = '{"limits":[1.5,2],"sector":"retail","score":612}'
    assert canonical(_column("json"), postgres) == canonical(_column("json"), silver)
    assert canonical_json('{"a": 1}') != canonical_json('{"a": "1"}')
    assert canonical_json('{"a": true}') != canonical_json('{"a": 1}')
    assert canonical_json('{"a": 0.1}') == canonical_json({"a": Decimal("0.10")})


def test_float4_is_compared_at_single_precision() -> None:
    widened = 1.100000023841858  # how a driver may hand over real '1.1'
    assert canonical(_column("float32"), 1.1) == canonical(_column("float32"), widened)
    assert canonical(_column("float64"), 1.1) != canonical(_column("float64"), widened)
    assert canonical(_column("float64"), float("nan")) == "NaN"


def test_other_types() -> None:
    identifier = uuid.UUID("6F9619FF-8B86-D011-B42D-00C04FC964FF")
    assert canonical(_column("uuid"), identifier) == canonical(_column("uuid"), str(identifier).upper())
    assert canonical(_column("bytes"), memoryview(b"\x01\xff")) == canonical(_column("bytes"), b"\x01\xff") == "01ff"
    assert canonical(_column("bytes"), "\\x01FF") == "01ff"  # bytea inside a JSON array
    assert canonical(_column("date"), dt.date(2026, 1, 2)) == canonical(_column("date"), "2026-01-02")
    assert canonical(_column("time"), dt.time(1, 2, 3)) == "01:02:03.000000"
    assert canonical(_column("boolean"), True) == "true"
    assert canonical(_column("int64"), 7) == canonical(_column("int16"), 7) == "7"
    assert canonical(_column("string"), "None") != canonical(_column("string"), None) == NULL


def test_arrays_are_lists_of_canonical_elements() -> None:
    column = _column("array", items=Column("element", "variable_decimal", "numeric"))
    assert canonical(column, [Decimal("1.50"), None]) == canonical(column, ["1.5", None])
    assert canonical(column, [Decimal("1.5")]) != canonical(column, [Decimal("1.5"), Decimal("1.5")])


def test_row_digest_depends_on_every_value_and_its_position() -> None:
    assert row_digest(["1", "a"]) == row_digest(["1", "a"])
    assert row_digest(["1", "a"]) != row_digest(["a", "1"])
    assert row_digest(["1", "a b"]) != row_digest(["1 a", "b"])  # the separator is not a space
    assert row_digest(["1", NULL]) != row_digest(["1", ""])
    assert len(row_digest(["x"])) == 16


def test_intervals_compare_as_months_days_and_microseconds() -> None:
    interval = Column("c", "string", "interval")
    debezium, postgres = "P0Y1M2DT3H4M5.678S", "P1M2DT3H4M5.678S"  # PostgreSQL in its iso_8601 style
    assert canonical(interval, debezium) == canonical(interval, postgres)
    assert canonical(interval, "P1Y") == canonical(interval, "P12M")
    assert canonical(interval, "P0Y0M-1DT0H0M-0.000001S") == canonical(interval, "P-1DT-0.000001S")
    assert canonical(interval, "P1M") != canonical(interval, "P30D")  # PostgreSQL keeps them apart too
    assert canonical(interval, "PT0.000001S") != canonical(interval, "PT0.000002S")


def test_times_with_time_zone_compare_in_utc() -> None:
    timetz = Column("c", "string", "time with time zone")
    assert canonical(timetz, "09:59:59.999999Z") == canonical(timetz, "23:59:59.999999+14")
    assert canonical(timetz, "09:59:59.999999Z") == canonical(timetz, "09:59:59.999999+00")
    assert canonical(timetz, "12:00:00-12") == "00:00:00.000000Z"
    assert canonical(timetz, "06:30:00Z") != canonical(timetz, "06:30:00+01")


@pytest.mark.parametrize("semantic", ["timestamptz", "timestamp", "timestamp_millis", "date"])
@pytest.mark.parametrize("text", ["infinity", "-infinity", "10000-01-01", "0044-03-15 BC", "0044-03-15 00:00:00 BC"])
def test_a_date_or_timestamp_python_cannot_hold_is_compared_as_postgresql_writes_it(
    semantic: Semantic, text: str
) -> None:
    assert canonical(_column(semantic), text) == text  # the writer refuses it: silver never holds the same
    assert canonical(_column("array", _column(semantic)), ["2024-01-01", text]).endswith(f'"{text}"]')


def test_an_array_holding_more_dimensions_than_it_declares_differs_from_what_debezium_sends() -> None:
    # PostgreSQL does not hold an integer[] to one dimension; Debezium sends {{1,2},{3,4}} as [null, null]
    ints = _column("array", _column("int32"))
    nested = canonical(ints, [[1, 2], [3, 4]])
    assert nested == '[["1", "2"], ["3", "4"]]'
    assert nested != canonical(ints, [None, None])
