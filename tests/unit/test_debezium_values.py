from __future__ import annotations

import base64
import random
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pytest

from services.common.debezium import days_to_date, micros_to_datetime, variable_scale_decimal
from services.common.debezium.values import (
    MAX_DECIMAL_SCALE,
    OutOfRangeError,
    base64_decoded,
    base64_unscaled,
    fit_unscaled,
)


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


@pytest.mark.timeout(10)
@pytest.mark.parametrize("scale", [-(10**7), 1_297_587_212, MAX_DECIMAL_SCALE + 1, -MAX_DECIMAL_SCALE - 1])
def test_a_scale_no_numeric_has_is_out_of_range_before_any_arithmetic(scale: int) -> None:
    with pytest.raises(OutOfRangeError, match="scale"):
        fit_unscaled(1, scale, 76, 38)
    with pytest.raises(OutOfRangeError, match="scale"):
        variable_scale_decimal({"scale": scale, "value": "AQ=="})


def test_an_unscaled_value_wider_than_any_numeric_is_out_of_range() -> None:
    wide = base64.b64encode(b"\x7f" + b"\xff" * 70_000).decode()
    with pytest.raises(OutOfRangeError, match="bits"):
        variable_scale_decimal({"scale": 2, "value": wide})


@pytest.mark.parametrize(
    ("unscaled", "scale", "fitted"),
    [
        (12345, 2, 12345 * 10**36),
        (10**16383 * 7, MAX_DECIMAL_SCALE, 7 * 10**38),  # 7.000…0 with PostgreSQL's most places: exact
        (-(10**75) + 1, 37, (-(10**75) + 1) * 10),
        (0, MAX_DECIMAL_SCALE, 0),
    ],
    ids=["places", "most-places", "most-digits", "zero"],
)
def test_values_the_lake_decimal_holds_exactly_are_rescaled(unscaled: int, scale: int, fitted: int) -> None:
    assert fit_unscaled(unscaled, scale, 76, 38) == fitted


@pytest.mark.parametrize(
    ("unscaled", "scale"),
    [(1, 39), (10**76, 38), (1, -38), (2**60_000, 0), (2**60_000 + 1, MAX_DECIMAL_SCALE)],
    ids=["too-many-places", "too-many-digits", "negative-scale", "huge", "huge-at-most-places"],
)
def test_values_the_lake_decimal_cannot_hold_are_refused(unscaled: int, scale: int) -> None:
    with pytest.raises(ValueError, match=r"decimal\(76, 38\)"):
        fit_unscaled(unscaled, scale, 76, 38)


def test_days_and_micros_beyond_years_1_to_9999_are_out_of_range() -> None:
    with pytest.raises(OutOfRangeError):
        days_to_date(3_000_000)
    with pytest.raises(OutOfRangeError):
        micros_to_datetime(10**18)


def _base64_texts(rng: random.Random) -> list[str]:
    """Texts of every length up to 40 characters and a few longer than the bulk decoder takes, most canonical
    base64, the rest a character off: padding misplaced or missing, outside the alphabet, not ASCII,
    whitespace."""
    texts = []
    for _ in range(3_000):
        text = base64.b64encode(
            rng.randbytes(rng.choice([rng.randrange(0, 28)] * 9 + [rng.randrange(180, 200)]))
        ).decode()
        if rng.random() < 0.3 and text:
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice("=A/+\u00e9 \n*-_") + text[at + rng.randrange(0, 2) :]
        texts.append(text)
    return texts


@pytest.mark.parametrize("seed", range(4))
def test_base64_decoded_in_bulk_is_what_b64decode_reads(seed: int) -> None:
    texts = _base64_texts(random.Random(seed))
    encoded = [t.encode() for t in texts]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    rows = np.array([i % 7 != 3 for i in range(len(texts))])  # some texts not asked about
    read, data, ends = base64_decoded(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets, rows)
    for i, text in enumerate(texts):
        got = data[ends[i] : ends[i + 1]].tobytes()
        try:
            expected: bytes | None = base64.b64decode(text, validate=True)
        except ValueError:
            expected = None
        if read[i]:
            assert rows[i], text
            assert got == expected, text
        else:  # left to the caller, to refuse or to read as before: never a text asked about and canonical
            assert got == b"", text
            assert not rows[i] or expected is None or len(text) % 4 or len(text) > 256, text


@pytest.mark.parametrize("seed", range(4))
def test_unscaled_values_read_in_bulk_are_the_big_endian_integers(seed: int) -> None:
    rng = random.Random(seed)
    raws = [rng.randbytes(rng.randrange(0, 10)) for _ in range(2_000)]
    encoded = [base64.b64encode(raw) for raw in raws]
    offsets = np.zeros(len(raws) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    read, unscaled = base64_unscaled(
        np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets, np.ones(len(raws), bool)
    )
    assert read.tolist() == [len(raw) <= 7 for raw in raws]
    assert unscaled[read].tolist() == [int.from_bytes(raw, "big", signed=True) for raw in raws if len(raw) <= 7]
