"""The Debezium Avro envelope of a table, derived from its contract, and its schema fingerprint.

Events in Avro single-object encoding name their writer schema only by a 64-bit fingerprint, so both
sides must derive exactly the same schema: this module is that derivation. It follows what Debezium's
PostgreSQL connector and Kafka Connect's AvroConverter emit (semantic types as ``connect.name``
annotations over plain Avro types), so a registry schema and a derived one decode the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from services.common.contracts.model import Column, TableContract

__all__ = ["EnvelopeSchema", "avro_name", "envelope_schema", "schema_fingerprint", "unreadable_reason"]

_INVALID_NAME_CHAR = re.compile(r"[^A-Za-z0-9_]")


def _semantic(connect_name: str, avro_type: str) -> dict[str, Any]:
    return {"type": avro_type, "connect.version": 1, "connect.name": connect_name}


_PLAIN: dict[str, Any] = {
    "int16": {"type": "int", "connect.type": "int16"},
    "int32": "int",
    "int64": "long",
    "boolean": "boolean",
    "float32": "float",
    "float64": "double",
    "string": "string",
    "bytes": "bytes",
    "uuid": _semantic("io.debezium.data.Uuid", "string"),
    "json": _semantic("io.debezium.data.Json", "string"),
    "date": _semantic("io.debezium.time.Date", "int"),
    "timestamp": _semantic("io.debezium.time.MicroTimestamp", "long"),
    "timestamp_millis": _semantic("io.debezium.time.Timestamp", "long"),
    "timestamptz": _semantic("io.debezium.time.ZonedTimestamp", "string"),
    "time": _semantic("io.debezium.time.MicroTime", "long"),
}

_VARIABLE_DECIMAL = "io.debezium.data.VariableScaleDecimal"


def _optional(avro_type: Any, default: Any = None) -> dict[str, Any]:
    return {"type": ["null", avro_type], "default": default}


def _source() -> dict[str, Any]:
    """``io.debezium.connector.postgresql.Source``: the fields Debezium 2.x/3.x sends."""
    optional_long = ["null", "long"]
    fields: list[dict[str, Any]] = [
        {"name": "version", "type": "string"},
        {"name": "connector", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "ts_ms", "type": "long"},
        {
            "name": "snapshot",
            "type": [
                {
                    **_semantic("io.debezium.data.Enum", "string"),
                    "connect.parameters": {"allowed": "true,first,first_in_data_collection,last,false,incremental"},
                    "connect.default": "false",
                },
                "null",
            ],
            "default": "false",
        },
        {"name": "db", "type": "string"},
        {"name": "sequence", **_optional("string")},
        {"name": "ts_us", **_optional("long")},
        {"name": "ts_ns", **_optional("long")},
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "txId", "type": optional_long, "default": None},
        {"name": "lsn", "type": optional_long, "default": None},
        {"name": "xmin", "type": optional_long, "default": None},
    ]
    return {
        "type": "record",
        "name": "Source",
        "namespace": "io.debezium.connector.postgresql",
        "fields": fields,
        "connect.name": "io.debezium.connector.postgresql.Source",
    }


class _Names:
    """Avro forbids defining a named type twice: the first use defines it, later uses refer by name."""

    def __init__(self) -> None:
        self._defined: set[str] = set()

    def once(self, full_name: str, definition: dict[str, Any]) -> Any:
        if full_name in self._defined:
            return full_name
        self._defined.add(full_name)
        return definition


def _value_type(column: Column, names: _Names) -> Any:
    """A column's Avro type as Debezium's AvroConverter writes it (without the null branch)."""
    match column.semantic:
        case "decimal":
            precision, scale = column.precision, column.scale
            return {
                "type": "bytes",
                "scale": scale,
                "precision": precision,
                "connect.version": 1,
                "connect.parameters": {"scale": str(scale), "connect.decimal.precision": str(precision)},
                "connect.name": "org.apache.kafka.connect.data.Decimal",
                "logicalType": "decimal",
            }
        case "variable_decimal":
            definition = {
                "type": "record",
                "name": "VariableScaleDecimal",
                "namespace": "io.debezium.data",
                "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
                "connect.doc": "Variable scaled decimal",
                "connect.version": 1,
                "connect.name": _VARIABLE_DECIMAL,
            }
            return names.once(_VARIABLE_DECIMAL, definition)
        case "array":
            assert column.items is not None
            items = _value_type(column.items, names)
            return {"type": "array", "items": ["null", items] if column.items.nullable else items}
        case semantic:
            return _PLAIN[semantic]


def _value_field(column: Column, names: _Names) -> dict[str, Any]:
    avro_type = _value_type(column, names)
    if column.nullable:
        return {"name": column.name, **_optional(avro_type)}
    return {"name": column.name, "type": avro_type}


def avro_name(part: str) -> str:
    """A topic prefix, schema or table as an Avro name part (Debezium's ``avro`` name adjustment)."""
    adjusted = _INVALID_NAME_CHAR.sub("_", part)
    return f"_{adjusted}" if adjusted[:1].isdigit() else adjusted


def envelope_schema(contract: TableContract, topic_prefix: str = "cdcflow") -> dict[str, Any]:
    """The Avro schema of the table's change events: ``before``/``after``, ``source``, ``op``, ``ts_ms``.

    Names follow Debezium (``<prefix>.<schema>.<table>.Envelope``/``.Value``): they are part of the
    canonical form, so they decide the fingerprint.
    """
    namespace = ".".join(avro_name(p) for p in (topic_prefix, contract.schema, contract.table))
    names = _Names()
    value = {
        "type": "record",
        "name": "Value",
        "namespace": namespace,
        "fields": [_value_field(c, names) for c in contract.columns],
        "connect.name": f"{namespace}.Value",
    }
    block = {
        "type": "record",
        "name": "block",
        "namespace": "event",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "total_order", "type": "long"},
            {"name": "data_collection_order", "type": "long"},
        ],
        "connect.version": 1,
        "connect.name": "event.block",
    }
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": namespace,
        "fields": [
            {"name": "before", **_optional(value)},
            {"name": "after", **_optional(f"{namespace}.Value")},
            {"name": "source", "type": _source()},
            {"name": "transaction", **_optional(block)},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", **_optional("long")},
            {"name": "ts_us", **_optional("long")},
            {"name": "ts_ns", **_optional("long")},
        ],
        "connect.version": 2,
        "connect.name": f"{namespace}.Envelope",
    }


def schema_fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO (Rabin) of the Parsing Canonical Form, as the 8 little-endian bytes a header carries."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


@dataclass(frozen=True, slots=True)
class EnvelopeSchema:
    """A contract's envelope schema, parsed once for fastavro, with its single-object fingerprint."""

    contract: TableContract
    schema: dict[str, Any]
    parsed: dict[str, Any]
    fingerprint: bytes

    @classmethod
    def of(cls, contract: TableContract, topic_prefix: str = "cdcflow") -> EnvelopeSchema:
        schema = envelope_schema(contract, topic_prefix)
        parsed = parse_schema(schema)
        assert isinstance(parsed, dict)  # a record schema parses to a record
        return cls(contract, schema, parsed, schema_fingerprint(schema))


def unreadable_reason(schema: dict[str, Any]) -> str | None:
    """Why fastavro must not read records of this (parsed) writer schema, or None when it may.

    fastavro reads nested values on the C stack and trusts block counts: a type that contains itself lets a
    record nest until the process crashes, and an array of items that take no bytes lets a few bytes of
    count make it run for ever. No Debezium envelope has either, so a writer schema with one is refused
    before any record of it is read.
    """
    named: dict[str, Any] = schema.get("__named_schemas", {})
    visiting: set[str] = set()
    done: set[str] = set()

    def walk(node: Any) -> str | None:  # noqa: PLR0911 - one return per kind of Avro type
        if isinstance(node, list):
            return next((r for r in map(walk, node) if r is not None), None)
        if isinstance(node, str):
            return walk(named[node]) if node in named and node not in done else _cycle(node, visiting)
        if not isinstance(node, dict):
            return None
        kind = node.get("type")
        if kind in ("record", "error"):
            return walk_record(node)
        if kind == "array":
            if _takes_no_bytes(node.get("items"), named, set()):
                return "it has an array whose items take no bytes"
            return walk(node.get("items"))
        if kind == "map":
            return walk(node.get("values"))
        return walk(kind) if isinstance(kind, (dict, list)) else None

    def walk_record(record: dict[str, Any]) -> str | None:
        name = str(record.get("name"))
        if name in visiting:
            return f"the type {name} contains itself"
        if name in done:
            return None
        visiting.add(name)
        found = next((r for r in (walk(f.get("type")) for f in record.get("fields", [])) if r is not None), None)
        visiting.discard(name)
        done.add(name)
        return found

    return walk(schema)


def _cycle(name: str, visiting: set[str]) -> str | None:
    return f"the type {name} contains itself" if name in visiting else None


def _takes_no_bytes(node: Any, named: dict[str, Any], seen: set[str]) -> bool:
    """Whether a value of this type can be encoded in zero bytes (null, fixed(0), records of such)."""
    if isinstance(node, str):
        if node in named and node not in seen:
            return _takes_no_bytes(named[node], named, seen | {node})
        return node == "null"
    if not isinstance(node, dict):
        return False  # a union spends at least one byte on its branch
    kind = node.get("type")
    if kind == "fixed":
        return int(node.get("size", 1)) == 0
    if kind in ("record", "error"):
        name = str(node.get("name"))
        fields = node.get("fields", [])
        return name not in seen and all(_takes_no_bytes(f.get("type"), named, seen | {name}) for f in fields)
    return isinstance(kind, (str, dict)) and _takes_no_bytes(kind, named, seen)
