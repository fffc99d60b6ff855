"""What is fuzzed: the contracts, their seed events, and a decoder per wire format."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, Literal

from services.common.contracts import Column, TableContract, load_contracts
from services.common.debezium.avro import AvroEventDecoder
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.settings import repo_root
from services.consumer.routing import EventDecoder

__all__ = [
    "CORPUS",
    "FORMATS",
    "MAX_VALUE_BYTES",
    "Format",
    "Seed",
    "contract",
    "contracts",
    "decoder",
    "every_type_events",
    "load_seeds",
    "topic",
]

CORPUS = Path(__file__).parent / "corpus"
Format = Literal["json", "json-schema", "avro-single-object"]
FORMATS: tuple[Format, ...] = ("json", "json-schema", "avro-single-object")
# Smaller than the writer's default (8 MiB) so that values over the limit are cheap to build; the limit's
# branch is what matters, not its size.
MAX_VALUE_BYTES = 1 << 20
TOPIC_PREFIX = "fuzz"

_ELEMENT_TYPES: tuple[tuple[str, str], ...] = (
    ("string", "text"),
    ("decimal", "numeric(10,2)"),
    ("variable_decimal", "numeric"),
    ("bytes", "bytea"),
    ("timestamptz", "timestamptz"),
    ("int32", "integer"),
)


def _every_type_contract() -> TableContract:
    """A table with every type family the decoders know (the demo schema has only some)."""
    plain = [
        Column("id", "int64", "bigint", nullable=False),
        Column("small", "int16", "smallint"),
        Column("medium", "int32", "integer"),
        Column("flag", "boolean", "boolean"),
        Column("real_value", "float32", "real"),
        Column("double_value", "float64", "double precision"),
        Column("label", "string", "text"),
        Column("blob", "bytes", "bytea"),
        Column("ref", "uuid", "uuid"),
        Column("doc", "json", "jsonb"),
        Column("day", "date", "date"),
        Column("stamp", "timestamp", "timestamp without time zone"),
        Column("stamp_ms", "timestamp_millis", "timestamp(3) without time zone"),
        Column("stamp_tz", "timestamptz", "timestamp with time zone"),
        Column("clock", "time", "time without time zone"),
        Column("amount", "decimal", "numeric(20,2)", precision=20, scale=2),
        Column("rate", "variable_decimal", "numeric"),
    ]
    arrays = []
    for semantic, pg_type in _ELEMENT_TYPES:
        precision, scale = (10, 2) if semantic == "decimal" else (None, None)
        element = Column("element", semantic, pg_type, precision=precision, scale=scale)  # type: ignore[arg-type]
        arrays.append(Column(f"list_{semantic}", "array", f"{pg_type}[]", items=element))
    return TableContract(schema="fuzz", table="every_type", columns=(*plain, *arrays), primary_key=("id",))


@cache
def contracts() -> dict[str, TableContract]:
    """The demo tables' contracts from ``schemas/`` and the every-type table, by ``schema.table``."""
    found = {c.qualified_name: c for c in load_contracts(repo_root() / "schemas")}
    wide = _every_type_contract()
    return {**found, wide.qualified_name: wide}


def contract(name: str) -> TableContract:
    return contracts()[name]


def topic(name: str) -> str:
    return f"{TOPIC_PREFIX}.{name}"


def decoder(name: str, fmt: Format) -> EventDecoder:
    """The decoder the writer would route ``name``'s topic to for ``fmt``."""
    table = contract(name)
    if fmt == "avro-single-object":
        return AvroEventDecoder.single_object(table, topic_prefix=TOPIC_PREFIX, max_value_bytes=MAX_VALUE_BYTES)
    return JsonEventDecoder(table, max_value_bytes=MAX_VALUE_BYTES)


@dataclass(frozen=True, slots=True)
class Seed:
    """One change event of the corpus: its table and its JSON value (``None``: a tombstone)."""

    target: str
    value: bytes | None


def load_seeds() -> dict[str, list[Seed]]:
    """The corpus, by table: every ``corpus/*.jsonl`` line is ``{"target": …, "value": text | null}``."""
    seeds: dict[str, list[Seed]] = {}
    for path in sorted(CORPUS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            value = entry["value"]
            seeds.setdefault(entry["target"], []).append(
                Seed(entry["target"], None if value is None else value.encode())
            )
    return seeds


# --- seed events of the every-type table ----------------------------------------------------------------


def _unscaled_b64(value: Decimal) -> dict[str, Any]:
    """Kafka Connect's VariableScaleDecimal in JSON: the scale and the unscaled value as base64 bytes."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return {"scale": -exponent, "value": base64.b64encode(raw).decode()}


_NUMBER = "@@NUMBER:"  # a decimal is a bare JSON number on the wire (decimal.format=NUMERIC)


def _decimal_token(value: Decimal) -> str:
    return f"{_NUMBER}{value}@@"


def _every_type_row(rng: random.Random, row_id: int) -> dict[str, Any]:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    moment = epoch + timedelta(microseconds=rng.randrange(-(10**15), 4 * 10**15))
    cents = Decimal(rng.randrange(-(10**12), 10**12)).scaleb(-2)
    return {
        "id": row_id,
        "small": rng.randrange(-(2**15), 2**15),
        "medium": rng.randrange(-(2**31), 2**31),
        "flag": rng.random() < 0.5,
        "real_value": rng.choice([0.5, -1.25, 3.0]),
        "double_value": rng.uniform(-1e9, 1e9),
        "label": rng.choice(["plain", "ünïcødé ✓", "tab\tnew\nline", 'quote " backslash \\', ""]),
        "blob": base64.b64encode(rng.randbytes(rng.randrange(0, 24))).decode(),
        "ref": "c8db6e24-be26-4bfa-8d78-99bc5d85c678",
        "doc": json.dumps({"tier": rng.choice(["gold", "silver"]), "n": [1, 2]}),
        "day": rng.randrange(-50_000, 50_000),
        "stamp": (moment - epoch) // timedelta(microseconds=1),
        "stamp_ms": (moment - epoch) // timedelta(milliseconds=1),
        "stamp_tz": moment.isoformat().replace("+00:00", "Z"),
        "clock": rng.randrange(0, 86_400 * 10**6),
        "amount": _decimal_token(cents),
        "rate": _unscaled_b64(Decimal(rng.randrange(-(10**20), 10**20)).scaleb(-rng.randrange(0, 30))),
        "list_string": ["a", None, "b"],
        "list_decimal": [_decimal_token(Decimal("10.50")), None],
        "list_variable_decimal": [_unscaled_b64(Decimal("0.125"))],
        "list_bytes": [base64.b64encode(b"\x00\xff").decode()],
        "list_timestamptz": ["2026-01-02T03:04:05Z"],
        "list_int32": [1, None, -7],
    }


def every_type_events(count: int, seed: int = 21) -> list[bytes | None]:
    """Debezium JSON events of the every-type table: creates, updates, deletes, snapshots, a truncate,
    and tombstones after deletes."""
    rng = random.Random(seed)
    events: list[bytes | None] = []
    for index in range(count):
        op = rng.choice("ccuudr") if index else "t"
        row = _every_type_row(rng, index + 1)
        before = {"id": index + 1} if op == "d" else (None if op in "crt" else _every_type_row(rng, index + 1))
        document = {
            "before": before,
            "after": None if op in "dt" else row,
            "source": {
                "version": "3.4.3.Final",
                "connector": "postgresql",
                "name": TOPIC_PREFIX,
                "ts_ms": 1_796_193_461_770 + index,
                "snapshot": "true" if op == "r" else "false",
                "db": "fuzz",
                "ts_us": 1_796_193_461_770_763 + index * 1000,
                "schema": "fuzz",
                "table": "every_type",
                "txId": 800 + index,
                "lsn": 26_739_032 + index * 64,
            },
            "transaction": None,
            "op": op,
            "ts_ms": 1_796_193_462_197 + index,
        }
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        text = text.replace(f'"{_NUMBER}', "").replace('@@"', "")
        events.append(text.encode())
        if op == "d":
            events.append(None)
    return events
