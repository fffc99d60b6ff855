"""Debezium value conventions shared by every decoder: semantic types, the TOAST placeholder, and the
bounds a value must be within before any arithmetic is done on it."""

from __future__ import annotations

import base64
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

__all__ = [
    "BULK_UNSCALED_DIGITS",
    "MAX_DECIMAL_SCALE",
    "UNAVAILABLE_VALUE",
    "OutOfRangeError",
    "base64_unscaled",
    "days_to_date",
    "fit_unscaled",
    "micros_to_datetime",
    "variable_scale_decimal",
]

UNAVAILABLE_VALUE = "__debezium_unavailable_value"
"""What Debezium sends for a TOASTed column the change did not touch (``unavailable.value.placeholder``)."""

MAX_DECIMAL_SCALE = 16_383
"""PostgreSQL's largest numeric scale: no source sends more, and a power of ten this large is still cheap.
A scale beyond it (a fuzzed 1,297,587,212) would make ``10 ** scale`` run for ever."""

# The most digits an unscaled value can have and still be a PostgreSQL numeric (131,072 before the point,
# 16,383 after), in bits; a wider one is refused before it is turned into text or a Decimal.
_MAX_UNSCALED_BITS = math.ceil((131_072 + MAX_DECIMAL_SCALE) * math.log2(10))
_LOG2_10 = math.log2(10)
_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

BULK_UNSCALED_DIGITS = 17
"""The most digits of an unscaled value :func:`base64_unscaled` reads (at most seven bytes: below 2**55)."""
_BULK_BYTES = 7
# Each byte's six bits in base64's alphabet; the padding is _PAD, any other byte _NOT_BASE64.
_PAD, _NOT_BASE64 = 64, 255
_SEXTETS = np.full(256, _NOT_BASE64, dtype=np.uint8)
_SEXTETS[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8)] = (
    np.arange(64)
)
_SEXTETS[ord("=")] = _PAD


class OutOfRangeError(ValueError):
    """A value outside what any column of its type can hold, refused before any arithmetic on it."""


def _check_scale(scale: int) -> None:
    if not -MAX_DECIMAL_SCALE <= scale <= MAX_DECIMAL_SCALE:
        raise OutOfRangeError(f"scale {scale} is beyond the ±{MAX_DECIMAL_SCALE} of any numeric")


def variable_scale_decimal(struct: dict[str, Any]) -> Decimal:
    """An unconstrained NUMERIC: ``{"scale": s, "value": base64(two's-complement big-endian unscaled)}``."""
    scale = int(struct["scale"])
    _check_scale(scale)
    unscaled = int.from_bytes(base64.b64decode(struct["value"]), "big", signed=True)
    if unscaled.bit_length() > _MAX_UNSCALED_BITS:
        raise OutOfRangeError(f"an unscaled value of {unscaled.bit_length()} bits is wider than any numeric")
    # Built from text: Decimal arithmetic (scaleb) would round to the context's 28 digits.
    return Decimal(f"{unscaled}E{-scale}")


def fit_unscaled(unscaled: int, scale: int, precision: int, target_scale: int) -> int:
    """``unscaled * 10**-scale`` as the unscaled integer of a ``decimal(precision, target_scale)``.

    Raises :class:`OutOfRangeError` for a scale no numeric has and ValueError when the value needs more
    places or more digits than the type has. Both are decided before a power of ten is computed from an
    untrusted number, so the cost is bounded by the type, not by what the record claims.
    """
    _check_scale(scale)
    if not unscaled:
        return 0
    # |value| ≥ 2^(bits-1) · 10^-scale: when the bit length alone proves it reaches 10^(precision - target),
    # it cannot fit; past this check every integer below has at most ~(precision + scale) digits.
    if unscaled.bit_length() > (precision - target_scale + scale) * _LOG2_10 + 2:
        raise ValueError(
            f"a value of {unscaled.bit_length()} bits at scale {scale} does not fit {_name(precision, target_scale)}"
        )
    factor: int = 10 ** abs(target_scale - scale)
    if scale <= target_scale:
        rescaled = unscaled * factor
    else:
        rescaled, remainder = divmod(unscaled, factor)
        if remainder:
            raise ValueError(f"a value with {scale} decimal places does not fit {_name(precision, target_scale)}")
    if abs(rescaled) >= 10**precision:
        raise ValueError(f"{rescaled}E-{target_scale} does not fit {_name(precision, target_scale)}")
    return rescaled


def base64_unscaled(data: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unscaled values of a column of ``{scale, value}`` structs read in bulk: for each text (``data``'s
    bytes between consecutive ``offsets``) whether it is read — among ``rows``, canonical base64 (padded, the
    padding last) of a two's-complement big-endian integer of 1 to :data:`_BULK_BYTES` bytes — and the
    integer. Any other text is for :func:`fit_unscaled`'s caller to read one at a time, as before."""
    n = len(offsets) - 1
    read, unscaled = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    lengths = np.diff(offsets)
    for length in (4, 8, 12):  # whole groups of four characters, up to nine bytes
        at = np.flatnonzero(rows & (lengths == length))
        if not len(at):
            continue
        sextets = _SEXTETS[data[offsets[at, None] + np.arange(length)]]
        pads = (sextets[:, -1] == _PAD).astype(np.int64) + (sextets[:, -2] == _PAD)
        canonical = (
            (sextets[:, :-2] < _PAD).all(axis=1)
            & (sextets[:, -2:] != _NOT_BASE64).all(axis=1)
            & ((sextets[:, -2] != _PAD) | (sextets[:, -1] == _PAD))
        )
        bits = np.where(sextets == _PAD, 0, sextets).astype(np.int64).reshape(len(at), -1, 4)
        groups = (bits[..., 0] << 18) | (bits[..., 1] << 12) | (bits[..., 2] << 6) | bits[..., 3]
        decoded = np.stack([groups >> 16, (groups >> 8) & 0xFF, groups & 0xFF], axis=-1).reshape(len(at), -1)
        for pad in (0, 1, 2):
            size = decoded.shape[1] - pad
            chosen = canonical & (pads == pad)
            if size > _BULK_BYTES or not chosen.any():
                continue
            digits = decoded[chosen, :size]
            value = np.where(digits[:, 0] >= 0x80, -1, 0)  # the sign, extended
            for column in range(size):
                value = (value << 8) | digits[:, column]
            read[at[chosen]], unscaled[at[chosen]] = True, value
    return read, unscaled


def _name(precision: int, scale: int) -> str:
    return f"decimal({precision}, {scale})"


def days_to_date(days: int) -> date:
    """``io.debezium.time.Date``: days since the epoch."""
    try:
        return _EPOCH_DATE + timedelta(days=days)
    except OverflowError:
        raise OutOfRangeError(f"{days} days since 1970-01-01 is outside years 1-9999") from None


def micros_to_datetime(micros: int) -> datetime:
    """``io.debezium.time.MicroTimestamp``: microseconds since the epoch, read as UTC."""
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise OutOfRangeError(f"{micros} µs since 1970-01-01 is outside years 1-9999") from None
