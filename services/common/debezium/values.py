"""Debezium value conventions shared by every decoder: semantic types, the TOAST placeholder, the bounds a
value must be within before any arithmetic is done on it, and base64 (bytea, unscaled numerics) decoded for
a whole column at once."""

from __future__ import annotations

import base64
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "BULK_UNSCALED_DIGITS",
    "MAX_DECIMAL_SCALE",
    "UNAVAILABLE_VALUE",
    "OutOfRangeError",
    "base64_decoded",
    "base64_unscaled",
    "column_bytes",
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
_BULK_CHARACTERS = 1 << 22  # base64 decoded in bulk this many characters at a time: its index arrays stay small
# Longer texts are decoded one at a time: binascii's cost per character is below the bulk decoder's passes,
# and its cost per call (~0.35 µs) is then small beside it.
_BULK_TEXT = 256
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


def column_bytes(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string or binary column's bytes, in place, and each value's start in them (with the end of the last)."""
    n = len(column)
    _, offsets_buffer, data_buffer = column.buffers()
    wide = pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type)
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64 if wide else np.int32)[column.offset : column.offset + n + 1]
    if data_buffer is None or not n:
        return np.zeros(0, dtype=np.uint8), np.zeros(n + 1, dtype=np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data, offsets.astype(np.int64, copy=False) - offsets[0]


def base64_decoded(
    data: np.ndarray, offsets: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base64 texts decoded in bulk, as ``base64.b64decode(text, validate=True)`` decodes them: which texts
    (``data``'s bytes between consecutive ``offsets``) are read — among ``rows``, of at most
    :data:`_BULK_TEXT` characters, canonical (a multiple of four characters of base64's alphabet, at most two
    ``=`` and only at the end) — and the bytes of those, one text's after another's, with each text's end in
    them (a text not read has none). Any other text is for the caller to decode one at a time, and refuse as
    that does."""
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    candidates = np.flatnonzero(rows & (lengths % 4 == 0) & (lengths <= _BULK_TEXT))
    read, sizes = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    pieces = []
    for chunk in _chunks(candidates, lengths[candidates], _BULK_CHARACTERS):
        good, decoded, decoded_sizes = _decoded(data, offsets[chunk], lengths[chunk])
        read[chunk], sizes[chunk] = good, decoded_sizes
        pieces.append(decoded)
    ends = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=ends[1:])
    return read, np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8), ends


def _chunks(rows: np.ndarray, lengths: np.ndarray, most: int) -> list[np.ndarray]:
    """``rows`` in runs of about ``most`` characters (a run ends with the text that reaches a multiple of it)."""
    if not len(rows):
        return []
    cuts = np.flatnonzero(np.diff(np.cumsum(lengths) // most)) + 1
    return np.split(rows, cuts)


def _decoded(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`base64_decoded` over texts whose lengths are multiples of four: which are canonical, their bytes
    one after another, and how many each has."""
    k = len(starts)
    firsts = np.cumsum(lengths) - lengths  # each text's start among the gathered characters
    if k and np.array_equal(starts[1:], starts[:-1] + lengths[:-1]):  # one run of text, read in place
        characters = data[starts[0] : starts[-1] + lengths[-1]]
    else:
        characters = data[np.repeat(starts - firsts, lengths) + np.arange(int(lengths.sum()))]
    sextets = _SEXTETS[characters]
    present = lengths > 0
    last, second_last = np.zeros(k, dtype=np.uint8), np.zeros(k, dtype=np.uint8)  # an empty text has no padding
    last[present] = sextets[firsts[present] + lengths[present] - 1]
    second_last[present] = sextets[firsts[present] + lengths[present] - 2]
    pads = (last == _PAD).astype(np.int64) + (second_last == _PAD)
    misplaced = np.flatnonzero(sextets >= _PAD)  # outside the alphabet, or padding: only the last two may be
    owner = np.searchsorted(firsts, misplaced, side="right") - 1
    beyond = misplaced - firsts[owner] < lengths[owner] - pads[owner]
    good = np.ones(k, dtype=bool)
    good[owner[beyond | (sextets[misplaced] == _NOT_BASE64)]] = False
    # uint8 arithmetic, each shift keeping its bits; a padding character only reaches the bytes it stands for,
    # which are dropped, and a text with a character outside the alphabet is dropped whole
    quads = sextets.reshape(-1, 4)
    decoded = np.empty((len(quads), 3), dtype=np.uint8)
    decoded[:, 0] = (quads[:, 0] << 2) | (quads[:, 1] >> 4)
    decoded[:, 1] = (quads[:, 1] << 4) | (quads[:, 2] >> 2)
    decoded[:, 2] = (quads[:, 2] << 6) | quads[:, 3]
    spans = lengths // 4 * 3
    sizes = np.where(good, spans - pads, 0)
    if good.all() and not pads.any():
        return good, decoded.ravel(), sizes
    keep = np.repeat(good, spans)
    ends = np.cumsum(spans)
    for pad in (1, 2):  # the padding's bytes
        keep[(ends - pad)[good & (pads >= pad)]] = False
    return good, decoded.ravel()[keep], sizes


def base64_unscaled(data: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unscaled values of a column of ``{scale, value}`` structs read in bulk: for each text (``data``'s
    bytes between consecutive ``offsets``) whether it is read — among ``rows``, canonical base64 (see
    :func:`base64_decoded`) of a two's-complement big-endian integer of at most :data:`_BULK_BYTES` bytes —
    and the integer. Any other text is for :func:`fit_unscaled`'s caller to read one at a time, as before."""
    read, decoded, ends = base64_decoded(data, offsets, rows)
    sizes = np.diff(ends)
    read &= sizes <= _BULK_BYTES
    at = np.flatnonzero(read)
    starts, sizes = ends[at], sizes[at]
    word = np.zeros((len(at), 8), dtype=np.uint8)
    some = sizes > 0
    word[np.flatnonzero(some)[decoded[starts[some]] >= 0x80]] = 0xFF  # the sign, extended
    rows_of_bytes = np.repeat(np.arange(len(at)), sizes)
    within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    word[rows_of_bytes, 8 - np.repeat(sizes, sizes) + within] = decoded[np.repeat(starts, sizes) + within]
    unscaled = np.zeros(len(read), dtype=np.int64)
    unscaled[at] = word.view(">i8").ravel()
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
