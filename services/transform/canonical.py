"""Canonical values: one spelling per value, whichever database and driver produced it.

``cdcflow verify`` hashes each row of PostgreSQL and of silver from these spellings, so two values compare
equal exactly when they are the same value of the column's contract type:

- decimals (NUMERIC(p, s), unconstrained NUMERIC held as text on DuckDB, ``1.50`` vs ``1.5``, ``0E-38``):
  the exact value in plain notation without trailing fraction zeros;
- timestamps with time zone: UTC, ISO-8601 with microseconds, whatever zone the session reported them in;
  timestamps without: the wall time as written;
- JSON (json, jsonb as text, whitespace and key order as either database prints them): the parsed document
  re-serialised with sorted keys, numbers as exact decimals;
- float4: rounded to single precision first (the driver may widen it differently on each side);
- bytes: hex; uuid: lower case; arrays: their elements, canonical, as a JSON list;
- intervals (ISO 8601 durations, as Debezium and PostgreSQL's ``iso_8601`` style spell them): months, days
  and microseconds, which is how PostgreSQL holds an interval (``P0Y1M`` and ``P1M`` are one value);
- times with time zone: the time in UTC.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import struct
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from services.common.contracts import Column

__all__ = ["NULL", "canonical", "canonical_decimal", "canonical_json", "row_digest"]

NULL = "\x00NULL"
"""The canonical spelling of SQL NULL (no real value can spell it)."""

_SEPARATOR = "\x1f"


def canonical_decimal(value: Any) -> str:
    """An exact decimal in plain notation, without trailing fraction zeros; ``-0`` is ``0``."""
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        return str(number)  # NaN / Infinity (PostgreSQL numeric allows them)
    if number.is_zero():
        return "0"
    return format(number.normalize(), "f")


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return {"\x00number": canonical_decimal(value)}
    if isinstance(value, float):
        return {"\x00number": canonical_decimal(Decimal(repr(value)))}
    raise TypeError(f"unexpected JSON value {value!r}")


def canonical_json(value: Any) -> str:
    """A JSON document (text, or already parsed) with sorted keys and exact, normalised numbers."""
    document = json.loads(value, parse_float=Decimal, parse_int=Decimal) if isinstance(value, str | bytes) else value
    return json.dumps(_json_value(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamp(value: Any, *, with_zone: bool) -> str:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return str(value)  # infinity, a year beyond 9999 or BC: compared as written
    if not isinstance(value, dt.datetime):
        raise TypeError(f"{value!r} is not a timestamp")
    if with_zone:
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return value.replace(tzinfo=None).isoformat(timespec="microseconds")


def _float(value: Any, *, single: bool) -> str:
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if single:
        number = struct.unpack("<f", struct.pack("<f", number))[0]
    return repr(number)


def _bytes(value: Any) -> str:
    if isinstance(value, str) and value.startswith("\\x"):  # bytea as PostgreSQL prints it (in JSON arrays)
        return value[2:].lower()
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytearray):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise TypeError(f"{value!r} is not bytes")
    return value.hex()


def _date(value: Any) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        return str(value)  # infinity, a year beyond 9999 or BC: compared as written


def _time(value: Any) -> str:
    return value.isoformat(timespec="microseconds") if isinstance(value, dt.time) else str(value)


_DURATION = re.compile(
    r"P(?:(?P<years>[-+]?\d+)Y)?(?:(?P<months>[-+]?\d+)M)?(?:(?P<weeks>[-+]?\d+)W)?(?:(?P<days>[-+]?\d+)D)?"
    r"(?:T(?:(?P<hours>[-+]?\d+)H)?(?:(?P<minutes>[-+]?\d+)M)?(?:(?P<seconds>[-+]?\d+(?:\.\d+)?)S)?)?"
)


def _interval(value: Any) -> str:
    """An ISO 8601 duration as PostgreSQL holds an interval: months, days, microseconds."""
    text = str(value)
    found = _DURATION.fullmatch(text)
    if found is None or text in ("P", "PT"):
        return text  # not a duration this spells: compared as written
    part = {k: v or "0" for k, v in found.groupdict().items()}
    months = int(part["years"]) * 12 + int(part["months"])
    days = int(part["weeks"]) * 7 + int(part["days"])
    micros = (int(part["hours"]) * 3600 + int(part["minutes"]) * 60) * 1_000_000
    micros += int(Decimal(part["seconds"]) * 1_000_000)
    return f"{months}m{days}d{micros}us"


def _time_with_zone(value: Any) -> str:
    """The time in UTC, at microseconds (``09:59:59.999999Z`` and ``09:59:59.999999+00``)."""
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif re.search(r"[+-]\d\d$", text):
        text += ":00"
    parsed = dt.time.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.isoformat(timespec="microseconds")
    offset = parsed.utcoffset() or dt.timedelta()
    moment = dt.datetime.combine(dt.date(2000, 1, 1), parsed.replace(tzinfo=None)) - offset
    return moment.time().isoformat(timespec="microseconds") + "Z"


_BY_PG_TYPE: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("interval", _interval),
    ("time with time zone", _time_with_zone),
)

_BY_SEMANTIC: dict[str, Callable[[Any], str]] = {
    "int16": lambda v: str(int(v)),
    "int32": lambda v: str(int(v)),
    "int64": lambda v: str(int(v)),
    "boolean": lambda v: "true" if v else "false",
    "float32": lambda v: _float(v, single=True),
    "float64": lambda v: _float(v, single=False),
    "decimal": canonical_decimal,
    "variable_decimal": canonical_decimal,
    "json": canonical_json,
    "uuid": lambda v: str(uuid.UUID(str(v))),
    "date": _date,
    "timestamptz": lambda v: _timestamp(v, with_zone=True),
    "timestamp": lambda v: _timestamp(v, with_zone=False),
    "timestamp_millis": lambda v: _timestamp(v, with_zone=False),
    "time": _time,
    "bytes": _bytes,
}


def canonical(column: Column, value: Any) -> str:
    """The canonical spelling of ``value`` as a value of ``column``'s contract type."""
    if value is None:
        return NULL
    if column.semantic == "array":
        assert column.items is not None
        if not isinstance(value, list):  # verify reads an array that does not start at 1 as PostgreSQL's text
            return f"array {value}"  # ... which no list's spelling equals
        return json.dumps(_elements(column.items, value), ensure_ascii=False)
    if column.semantic == "string":
        for prefix, by_type in _BY_PG_TYPE:
            if column.pg_type.startswith(prefix):
                return by_type(value)
    spell = _BY_SEMANTIC.get(column.semantic, str)
    return spell(value)


def _elements(items: Column, value: Any) -> list[Any]:
    """An array's canonical elements. PostgreSQL does not hold a column to the dimensions it declares: a value of
    an ``integer[]`` may have two, read as nested lists and kept nested, so it differs from what arrived."""
    return [_elements(items, v) if isinstance(v, list) else canonical(items, v) for v in value]


def row_digest(values: Sequence[str]) -> bytes:
    """A 16-byte digest of a row's canonical values, in column order."""
    return hashlib.blake2b(_SEPARATOR.join(values).encode(), digest_size=16).digest()
