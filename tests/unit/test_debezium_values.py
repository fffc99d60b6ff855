from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from services.common.debezium import days_to_date, micros_to_datetime, variable_scale_decimal


def _vsd(value: Decimal) -> dict[str, object]:
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits))) * (-1 if sign else 1)
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return {"scale": -exponent, "value": base64.b64encode(raw).decode()}


@pytest.mark.parametrize(
    "value",
    ["0", "1.5", "-1.5", "123456789012345678901234567890.123456789", "-0.000000000000000001", "127", "-128"],
)
def test_variable_scale_decimal_round_trips_exactly(value: str) -> None:
    assert variable_scale_decimal(_vsd(Decimal(value))) == Decimal(value)


def test_debezium_captured_bytes_decode() -> None:
    # seen on the wire for 1.234567890123 (NUMERIC without precision)
    assert variable_scale_decimal({"scale": 12, "value": "AR9x+wTL"}) == Decimal("1.234567890123")


def test_dates_and_micro_timestamps() -> None:
    assert days_to_date(0) == date(1970, 1, 1)
    assert days_to_date(20_486) == date(2026, 2, 2)
    assert days_to_date(-1) == date(1969, 12, 31)
    assert micros_to_datetime(1_777_975_872_123_456) == datetime(2026, 5, 5, 10, 11, 12, 123456, tzinfo=UTC)
