"""Hostile records known to have crashed, hung or escaped the decoder, written out by hand (issue 21).

Each is one record of a seed event with one change, in every wire format it can be carried in; replayed like
a kept crasher (``tests/unit/test_fuzz_decode.py``), quickly, and since none can be carried exactly, each must
end as a failure (for the DLQ), never as a row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.fuzz.mutate import Raw, avro_bytes, avro_event, connect_schema, dump
from tests.fuzz.runner import Batch, Record
from tests.fuzz.targets import Format, contract, load_seeds

__all__ = ["known_batches"]

PG_INFINITY = 9_223_372_036_825_200_000  # Debezium's value for PostgreSQL's `infinity` in a timestamp
YEAR_33658_MS = 10**15


def _after(column: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        event["after"][column] = value

    return change


def _top(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        event[key] = value

    return change


def _source_year_33658(event: dict[str, Any]) -> None:
    event["source"].update(ts_ms=YEAR_33658_MS, ts_us=YEAR_33658_MS * 1_000)


def _deep_arrays(depth: int) -> Raw:
    return Raw(b"[" * depth + b"1" + b"]" * depth)


def _deep_objects(depth: int) -> Raw:
    return Raw(b'{"a":' * depth + b"1" + b"}" * depth)


# name → (table, change of the decoded event); every_type has a column of every kind
_JSON_CHANGES: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "nesting_20000_in_a_column": ("lending.transactions", _after("reference", _deep_arrays(20_000))),
    "nesting_50000_objects_top_level": ("lending.transactions", _top("extra", _deep_objects(50_000))),
    "escaped_quote_in_a_key": ("lending.transactions", _after('a"b', 1)),
    "deep_arrays_3000": ("lending.transactions", _top("extra", _deep_arrays(3_000))),
    "digits_5000_in_a_decimal": ("lending.transactions", _after("amount", Raw(b"9" * 5_000))),
    "digits_5000_top_level": ("lending.transactions", _top("ts_ms", Raw(b"9" * 5_000))),
    "invalid_utf8_key_in_after": ("lending.transactions", _after("reference", "x")),  # key bytes swapped below
    "ts_ms_year_33658": ("lending.transactions", _source_year_33658),
    "scale_minus_1e7": ("lending.transactions", _after("exchange_rate", {"scale": -(10**7), "value": "AQ=="})),
    "scale_1297587212": ("lending.transactions", _after("exchange_rate", {"scale": 1_297_587_212, "value": "AQ=="})),
    "infinity_in_timestamp_millis": ("fuzz.every_type", _after("stamp_ms", PG_INFINITY)),
    "infinity_in_timestamp_micros": ("fuzz.every_type", _after("stamp", PG_INFINITY)),
    "time_of_2_pow_62": ("fuzz.every_type", _after("clock", 2**62)),
    "date_of_2_pow_31": ("fuzz.every_type", _after("day", 2**31 - 1)),
    "nan_in_a_decimal": ("lending.transactions", _after("amount", Raw(b"NaN"))),
    "lone_surrogate": ("lending.transactions", _after("reference", "\ud800")),
    "scale_in_an_array": ("fuzz.every_type", _after("list_variable_decimal", [{"scale": -(10**7), "value": "AQ=="}])),
}
_INVALID_UTF8_KEY = (b'"reference":', b'"ref\xff\xfeerence":')

# name → (table, change of the Avro event): values the Avro types hold, out of the lake's range
_AVRO_CHANGES: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "avro_scale_minus_1e7": ("lending.transactions", _after("exchange_rate", {"scale": -(10**7), "value": b"\x01"})),
    "avro_scale_1297587212": (
        "lending.transactions",
        _after("exchange_rate", {"scale": 1_297_587_212, "value": b"\x01"}),
    ),
    "avro_ts_ms_year_33658": ("lending.transactions", _source_year_33658),
    "avro_infinity_in_timestamp_millis": ("fuzz.every_type", _after("stamp_ms", PG_INFINITY)),
    "avro_time_of_2_pow_62": ("fuzz.every_type", _after("clock", 2**62)),
}


def _first_create(target: str) -> bytes:
    for seed in load_seeds()[target]:
        if seed.value is not None and json.loads(seed.value)["op"] in ("c", "r"):
            return seed.value
    raise AssertionError(f"the corpus has no create of {target}")


def _json_value(target: str, change: Callable[[dict[str, Any]], None]) -> bytes:
    event = json.loads(_first_create(target), parse_float=lambda text: Raw(text.encode()))
    change(event)
    return dump(event)


def known_batches() -> dict[str, Batch]:
    """One single-record batch per known hostile record and format."""
    batches: dict[str, Batch] = {}
    formats: tuple[Format, ...] = ("json", "json-schema")
    for name, (target, change) in _JSON_CHANGES.items():
        value = _json_value(target, change)
        if name == "invalid_utf8_key_in_after":
            value = value.replace(*_INVALID_UTF8_KEY)
        for fmt in formats:
            if fmt == "json-schema":
                value = b'{"schema":' + dump(connect_schema(contract(target))) + b',"payload":' + value + b"}"
            batches[f"{name}-{fmt}"] = Batch(target, fmt, (Record(value, 0, 7, (name,)),))
    for name, (target, change) in _AVRO_CHANGES.items():
        table = contract(target)
        event = avro_event(table, _first_create(target))
        change(event)
        record = Record(avro_bytes(table, event), 0, 7, (name,))
        batches[name] = Batch(target, "avro-single-object", (record,))
    return batches
