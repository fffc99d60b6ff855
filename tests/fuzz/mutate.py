"""Structural and byte-level mutations of Debezium change events.

A JSON event is parsed into a tree whose nodes the serializer here writes back verbatim, so a mutation can
put in what no JSON library would write: ``NaN``, duplicate keys, keys with escapes, invalid UTF-8, lone
surrogates, 50,000 levels of nesting, numbers of thousands of digits. Avro events are mutated as decoded
values (extremes the Avro types still hold) and then as bytes.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import fastavro

from services.common.contracts import Column, TableContract
from services.common.debezium.avro import SINGLE_OBJECT_MARKER
from services.common.debezium.avro_schema import EnvelopeSchema
from tests.fuzz.targets import MAX_VALUE_BYTES, TOPIC_PREFIX, Format

__all__ = ["JSON_MUTATIONS", "Mutant", "Raw", "avro_bytes", "avro_event", "connect_schema", "dump", "mutate"]


# --- a JSON tree that can hold anything -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes written into the JSON text as they are (a number token, a broken string, deep nesting)."""

    text: bytes


class Pairs(list[tuple[Any, Any]]):
    """An object as its key/value pairs in order: may repeat a key; a key may be :class:`Raw`."""


def _string(value: str, rng: random.Random | None = None) -> bytes:
    """A JSON string; lone surrogates go out as ``\\ud800`` escapes or (sometimes) as CESU-8 bytes."""
    if rng is not None and rng.random() < 0.3:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


def dump(node: Any, rng: random.Random | None = None) -> bytes:
    """``node`` as JSON text, byte for byte what the mutations put in."""
    out: list[bytes] = []
    _dump(node, out, rng)
    return b"".join(out)


def _dump(node: Any, out: list[bytes], rng: random.Random | None) -> None:
    if isinstance(node, Raw):
        out.append(node.text)
    elif node is None or isinstance(node, bool):
        out.append(b"null" if node is None else b"true" if node else b"false")
    elif isinstance(node, int | float | Decimal):
        out.append(str(node).encode())
    elif isinstance(node, str):
        out.append(_string(node, rng))
    elif isinstance(node, dict | Pairs):
        pairs = node.items() if isinstance(node, dict) else node
        out.append(b"{")
        for index, (key, value) in enumerate(pairs):
            if index:
                out.append(b",")
            out.append(key.text if isinstance(key, Raw) else _string(key, rng))
            out.append(b":")
            _dump(value, out, rng)
        out.append(b"}")
    elif isinstance(node, list):
        out.append(b"[")
        for index, value in enumerate(node):
            if index:
                out.append(b",")
            _dump(value, out, rng)
        out.append(b"]")
    else:
        raise TypeError(f"cannot write {type(node).__name__}")


def _parse(value: bytes) -> Any:
    """A seed event as a tree; numbers with a fraction stay exact (as their text)."""
    return json.loads(value, parse_float=lambda text: Raw(text.encode()))


# --- values that break things -----------------------------------------------------------------------------

_DEPTHS = (64, 129, 1_000, 5_000, 20_000, 50_000)
_DIGITS = (19, 20, 39, 40, 77, 4_300, 4_301, 5_000, 12_000)
_EXTREME_INTS = (2**63 - 1, -(2**63), 2**63, 2**64, -(2**63) - 1, 2**31, -(2**31) - 1, 2**15, 2**53 + 1, -1, 0)
# ms: year 33658 (issue 21), the year 10000 boundary, before year 1; µs/ns read as ms and the reverse
_TIMES = (10**15, 253_402_300_800_000, 253_402_300_799_999, -62_135_596_800_001, 2**62, -(2**62), 9_223_372_036_854)
_SCALES = (-(10**7), 1_297_587_212, 2**31 - 1, -(2**31), 2**31, 2**63, -1, 39, 400, 10**6)
_SPECIAL_NUMBERS = (b"NaN", b"Infinity", b"-Infinity", b"nan", b"1e309", b"-1e309", b"1E+2", b"-0", b"0.0e0", b"1e-400")
_BAD_UTF8 = (
    b"\xff\xfe",
    b"\xc3(",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xf8\x88\x80\x80\x80",
    b"\xf4\x90\x80\x80",
)
_SURROGATES = ("\ud800", "\udfff", "a\ud800b", "\udc00\ud800", "\ud83d")
_ODD_STRINGS = (
    "",
    "\x00",
    "\u2028\u2029",
    "__debezium_unavailable_value",
    "2026-13-45T99:99:99Z",
    "+275760-09-13T00:00:00Z",
    "-009999-01-01T00:00:00Z",
    "2026-05-06T05:08:09.654321+14:00",
    "2026-05-06T05:08:09.1234567890123Z",
    "infinity",
    "-infinity",
    "NaN",
    "12345678901234567890123456789012345678901234567890",
    "not-a-uuid",
    "{",
    "=" * 7,
    "AAAA" * 3,
)
_WRONG_TYPES: tuple[Any, ...] = (None, True, False, 0, -1, 1.5, "", "x", [], {}, [1, "a"], {"scale": 1}, [[[]]])


def _wrong_type(rng: random.Random) -> Any:
    """A value of another type than a field's, a copy of its own: later mutations change a tree in place, and a
    shared one would carry their changes into every later batch, which then no seed and index rebuilds."""
    return copy.deepcopy(rng.choice(_WRONG_TYPES))


def _deep(rng: random.Random) -> Raw:
    depth = rng.choice(_DEPTHS)
    if rng.random() < 0.5:
        return Raw(b"[" * depth + b"1" + b"]" * depth)
    return Raw(b'{"a":' * depth + b"1" + b"}" * depth)


def _huge_number(rng: random.Random) -> Raw:
    digits = rng.choice(_DIGITS)
    sign = b"-" if rng.random() < 0.3 else b""
    fraction = b"." + b"5" * rng.choice((1, 2, 40, 5_000)) if rng.random() < 0.3 else b""
    return Raw(sign + b"9" * digits + fraction)


def _bad_utf8_string(rng: random.Random) -> Raw:
    return Raw(b'"r' + rng.choice(_BAD_UTF8) + b'-x"')


def _huge_string(rng: random.Random) -> str:
    size = rng.choice((10_000, 100_000, MAX_VALUE_BYTES - 2_000, MAX_VALUE_BYTES + 10))
    return rng.choice("ab\u00e9\u2713") * size


def _variable_decimal(rng: random.Random) -> Any:
    scale: Any = rng.choice((*_SCALES, None, "3", 1.5, rng.randrange(-50, 50)))
    value: Any = rng.choice(
        (
            base64.b64encode(rng.randbytes(rng.choice((1, 8, 17, 33, 4_000)))).decode(),
            "",
            "!!!",
            "AA==",
            "AA",
            5,
            None,
            "__debezium_unavailable_value",
        )
    )
    pairs = Pairs([("scale", scale), ("value", value)])
    if rng.random() < 0.2:
        pairs.append(("value", "AQ=="))  # a second value: which one wins?
    if rng.random() < 0.2:
        rng.shuffle(pairs)
    return pairs


_HOSTILE: tuple[Callable[[random.Random], Any], ...] = (
    _deep,
    _huge_number,
    lambda rng: rng.choice(_EXTREME_INTS),
    lambda rng: rng.choice(_TIMES) * rng.choice((1, -1, 1_000)),
    lambda rng: Raw(rng.choice(_SPECIAL_NUMBERS)),
    _bad_utf8_string,
    lambda rng: rng.choice(_SURROGATES),
    _huge_string,
    _variable_decimal,
    lambda rng: rng.choice(_ODD_STRINGS),
    _wrong_type,
)


def _hostile_value(rng: random.Random) -> Any:
    """Any one value a hostile producer could put where a field's value goes."""
    return rng.choice(_HOSTILE)(rng)


# --- where to put them --------------------------------------------------------------------------------------


def _objects(tree: Any) -> list[Any]:
    """The objects of the event a mutation can change, favouring the row images and the source block."""
    found = [tree]
    if isinstance(tree, dict):
        for name in ("after", "before", "source"):
            if isinstance(tree.get(name), dict):
                found += [tree[name]] * 3
                found += [v for v in tree[name].values() if isinstance(v, dict)]
    return found


def _slot(rng: random.Random, tree: Any) -> tuple[dict[str, Any], str] | None:
    """A random (object, key) of the event."""
    candidates = [o for o in _objects(tree) if isinstance(o, dict) and o]
    if not candidates:
        return None
    target = rng.choice(candidates)
    return target, rng.choice(list(target))


def _replace_value(rng: random.Random, tree: Any) -> str:
    slot = _slot(rng, tree)
    if slot is None:
        return "none"
    target, key = slot
    target[key] = _hostile_value(rng)
    return f"value:{key}"


def _source_time(rng: random.Random, tree: Any) -> str:
    source = tree.get("source") if isinstance(tree, dict) else None
    if not isinstance(source, dict):
        return "none"
    key = rng.choice(("ts_ms", "ts_us", "ts_ns", "lsn", "txId"))
    source[key] = rng.choice(_TIMES) * rng.choice((1, -1, 1_000)) if rng.random() < 0.8 else _huge_number(rng)
    return f"source:{key}"


def _column_of_kind(rng: random.Random, tree: Any, contract: TableContract, semantics: tuple[str, ...]) -> str:
    images = [tree[n] for n in ("after", "before") if isinstance(tree, dict) and isinstance(tree.get(n), dict)]
    columns = [c for c in contract.columns if c.semantic in semantics]
    if not images or not columns:
        return "none"
    column = rng.choice(columns)
    image = rng.choice(images)
    image[column.name] = _extreme_for(rng, column)
    return f"column:{column.semantic}"


def _extreme_for(rng: random.Random, column: Column) -> Any:
    match column.semantic:
        case "timestamp" | "timestamp_millis" | "time" | "date":
            return rng.choice((*_TIMES, *_EXTREME_INTS)) * rng.choice((1, -1))
        case "variable_decimal":
            return _variable_decimal(rng)
        case "decimal":
            return rng.choice((_huge_number(rng), Raw(rng.choice(_SPECIAL_NUMBERS)), "12.5", Raw(b"1e400")))
        case "timestamptz":
            return rng.choice(_ODD_STRINGS)
        case "array":
            return rng.choice(([_hostile_value(rng)], [None] * rng.choice((1, 10_000)), _deep(rng), "x"))
        case _:
            return _hostile_value(rng)


def _time_column(rng: random.Random, tree: Any, contract: TableContract) -> str:
    return _column_of_kind(rng, tree, contract, ("timestamp", "timestamp_millis", "time", "date", "timestamptz"))


def _scale_column(rng: random.Random, tree: Any, contract: TableContract) -> str:
    return _column_of_kind(rng, tree, contract, ("variable_decimal", "decimal", "array"))


def _duplicate_key(rng: random.Random, tree: Any) -> str:
    slot = _slot(rng, tree)
    if slot is None:
        return "none"
    target, key = slot
    pairs = Pairs(target.items())
    index = next(i for i, (k, _) in enumerate(pairs) if k == key)
    pairs.insert(index + rng.choice((0, 1)), (key, _hostile_value(rng) if rng.random() < 0.5 else None))
    _swap_in(tree, target, pairs)
    return "duplicate_key"


def _swap_in(tree: Any, old: Any, new: Any) -> None:
    """Replace the object ``old`` inside ``tree`` (one level down, or two for images' fields)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if value is old:
                tree[key] = new
                return
            if isinstance(value, dict):
                _swap_in(value, old, new)


def _in_a_column(tree: Any, target: Any) -> bool:
    """Whether ``target`` is the value of a row image's column (a struct such as a VariableScaleDecimal)."""
    images = [tree.get(n) for n in ("after", "before")] if isinstance(tree, dict) else []
    return any(target is value for image in images if isinstance(image, dict) for value in image.values())


def _escaped_key(rng: random.Random, tree: Any) -> str:
    """A key with an escape in it: ``a\\"b``, a known name spelled with ``\\u`` escapes, a bad one."""
    slot = _slot(rng, tree)
    if slot is None:
        return "none"
    target, key = slot
    # a struct column's keys go through other code than an envelope's or an image's: named apart
    family = "escaped_key_in_struct" if _in_a_column(tree, target) else "escaped_key"
    choice = rng.randrange(5)
    if choice == 0:
        target['a"b'] = rng.choice((1, "x", None, _hostile_value(rng)))
        return f"{family}:quote"
    if choice == 1:
        target["back\\slash\n\t"] = 1
        return f"{family}:control"
    spelled = "".join(f"\\u{ord(c):04x}" if i == 0 or rng.random() < 0.3 else c for i, c in enumerate(key))
    pairs = Pairs(target.items())
    index = next(i for i, (k, _) in enumerate(pairs) if k == key)
    if choice == 2:  # the same name, escaped: equal to a parser that unescapes, new to one that does not
        pairs[index] = (Raw(f'"{spelled}"'.encode()), pairs[index][1])
    elif choice == 3:
        pairs[index] = (Raw(b'"' + key.encode() + rng.choice(_BAD_UTF8) + b'"'), pairs[index][1])
    else:
        pairs.append((Raw(b'"\\ud800' + key.encode() + b'"'), 1))
    _swap_in(tree, target, pairs)
    return f"{family}:{choice}"


def _drop_field(rng: random.Random, tree: dict[str, Any]) -> str:
    if tree:
        tree.pop(rng.choice(list(tree)))
    return "drop_field"


def _swap_images(rng: random.Random, tree: dict[str, Any]) -> str:
    tree["before"], tree["after"] = tree.get("after"), tree.get("before")
    return "swap_images"


def _odd_op(rng: random.Random, tree: dict[str, Any]) -> str:
    tree["op"] = rng.choice(("x", "", "cc", None, 1, ["c"], "C", "t", "d", "r", "u"))
    return "op"


def _retype_block(rng: random.Random, tree: dict[str, Any]) -> str:
    tree[rng.choice(("after", "before", "source"))] = _wrong_type(rng)
    return "retype_block"


def _unknown_top_level(rng: random.Random, tree: dict[str, Any]) -> str:
    tree[f"unknown_{rng.randrange(100)}"] = _hostile_value(rng)
    return "unknown_top_level"


def _unknown_column(rng: random.Random, tree: dict[str, Any]) -> str:
    image = tree.get("after")
    if not isinstance(image, dict):
        return "none"
    # "payload" and "schema" are also the names of the embedded schema's wrapper
    name = rng.choice(("payload", "schema", "new_column", "_kafka_offset", "_op"))
    image[name] = rng.choice((1, "x", None))
    return f"unknown_column:{name}"


_ENVELOPE_CHANGES = (_drop_field, _swap_images, _odd_op, _retype_block, _unknown_top_level, _unknown_column)


def _remove_or_retype_envelope(rng: random.Random, tree: Any) -> str:
    if not isinstance(tree, dict):
        return "none"
    return rng.choice(_ENVELOPE_CHANGES)(rng, tree)


_TREE_MUTATIONS: tuple[Callable[..., str], ...] = (
    _replace_value,
    _source_time,
    _duplicate_key,
    _escaped_key,
    _remove_or_retype_envelope,
)
# Forms a JSON number or string can take that Debezium never writes but a parser may read differently:
# exponents, signs, leading zeros, widths just past a column's type, escapes the native reader must decode.
_NUMBER_FORMS = (
    b"1e2",
    b"1E+2",
    b"1.0",
    b"-0",
    b"-0.0",
    b"01",
    b"+1",
    b".5",
    b"5.",
    b"1e-400",
    b"12.345",
    b"00012.50",
    b"1_000",
    b"32768",
    b"-32769",
    b"2147483648",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"1e39",
    b"3.4028236e38",
    b"0.1e1",
    b"1e-4999999",  # an exponent Arrow's decimal conversion crashes on: refused before Arrow sees it
    b"-2.5E+0004999999",
)
_STRING_FORMS = (
    b'"1e-4999999"',  # a decimal column's text is converted too
    b'"x1e-4999999"',  # text that cannot be a number, an exponent inside it: Arrow refuses it unconverted
    b'"1e-4999999x"',
    b'"c1e6852742"',
    b'" 1e-4999999"',
    b'"12.50"',  # a decimal's text (decimal.handling.mode=string): the native reader reads the plain forms
    b'"-0.05"',
    b'"+1"',
    b'"01.5"',
    b'"123456789012345678901234567890.5"',
    b'"\\u0000"',
    b'"\\/"',
    b'"\\ud83d\\ude00"',
    b'"\\uD800\\u0041"',
    b'"\\u00e9t\\u00e9"',
    b'"tab\\tend"',
    b'"C8DB6E24-BE26-4BFA-8D78-99BC5D85C678"',
    b'"{c8db6e24-be26-4bfa-8d78-99bc5d85c678}"',
    b'"AP8"',
    b'"AP-_"',
    b'"A P 8 ="',
    b'"2026-05-06t05:08:09z"',
    b'"2026-05-06T05:08:09+0000"',
    b'"2026-05-06 05:08:09Z"',
    b'"2026-05-06T24:00:00Z"',
    b'"2026-05-06T23:59:60Z"',
    b'"20260506T050809Z"',
    b'"2026-05-06T05:08:09.1234567Z"',
)


def _near_valid(rng: random.Random, tree: Any, contract: TableContract) -> str:
    """A column's value in a form no producer writes but any JSON parser reads: one parser may take it
    and another refuse it, or convert it differently."""
    images = [tree[n] for n in ("after", "before") if isinstance(tree, dict) and isinstance(tree.get(n), dict)]
    if not images:
        return "none"
    column = rng.choice(contract.columns)
    form = rng.choice(_NUMBER_FORMS if rng.random() < 0.6 else _STRING_FORMS)
    value: Any = Raw(form)
    if column.semantic == "array" and rng.random() < 0.7:
        value = [value, None]
    elif column.semantic == "variable_decimal" and rng.random() < 0.7:
        value = Pairs([("scale", Raw(rng.choice(_NUMBER_FORMS))), ("value", "AQ==")])
    rng.choice(images)[column.name] = value
    return f"near_valid:{column.semantic}"


_CONTRACT_MUTATIONS: tuple[Callable[..., str], ...] = (_time_column, _scale_column, _near_valid, _near_valid)


# --- the embedded Connect schema ---------------------------------------------------------------------------


def connect_schema(contract: TableContract) -> dict[str, Any]:
    """Roughly the schema JsonConverter embeds with schemas.enable=true (the decoder reads only the payload)."""
    fields = [
        {"type": "int64" if c.semantic.startswith("int") else "string", "optional": c.nullable, "field": c.name}
        for c in contract.columns
    ]
    image = {"type": "struct", "fields": fields, "optional": True, "name": f"{contract.qualified_name}.Value"}
    return {
        "type": "struct",
        "fields": [
            {**image, "field": "before"},
            {**image, "field": "after"},
            {"type": "struct", "fields": [], "optional": False, "field": "source"},
            {"type": "string", "optional": False, "field": "op"},
        ],
        "optional": False,
        "name": f"{contract.qualified_name}.Envelope",
    }


def _wrap(rng: random.Random, payload: bytes, contract: TableContract, names: list[str]) -> bytes:
    """``{"schema": …, "payload": …}``; sometimes with a schema that lies or a wrapper that is broken."""
    schema: Any = connect_schema(contract)
    choice = rng.randrange(10)
    if choice == 0:
        schema["fields"] = list(reversed(schema["fields"]))
        names.append("schema:lies")
    elif choice == 1:
        schema = rng.choice((None, "x", [], _deep(rng), _huge_string(rng)))
        names.append("schema:garbage")
    elif choice == 2:
        names.append("schema:payload_first")
        return b'{"payload":' + payload + b',"schema":' + dump(schema) + b"}"
    elif choice == 3:
        names.append("schema:two_payloads")
        return b'{"schema":' + dump(schema) + b',"payload":' + payload + b',"payload":{"op":"c"}}'
    elif choice == 4:
        names.append("schema:no_payload")
        return b'{"schema":' + dump(schema) + b"}"
    elif choice == 5:
        names.append("schema:spaced")
        return b'{"schema" : ' + dump(schema) + b' , "payload" : ' + payload + b" }"
    return b'{"schema":' + dump(schema) + b',"payload":' + payload + b"}"


# --- bytes ------------------------------------------------------------------------------------------------


def _flip(rng: random.Random, value: bytes) -> bytes:
    data = bytearray(value)
    for _ in range(rng.choice((1, 2, 8)) if data else 0):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def _repeat(rng: random.Random, value: bytes, at: int) -> bytes:
    stop = min(len(value), at + rng.randrange(1, 256))
    return value[:stop] + value[at:stop] * rng.choice((1, 2, 100)) + value[stop:]


_INSERTS = (b"\n", b"\x00", b"\\", b'"', b"{[")
_WHITESPACE = (b" ", b"\n", b"\t", b"\xef\xbb\xbf", b"\r\n")
_WHOLE = (b"", b"null", b"[]", b"{}", b'"x"', b"1", b"{", b"nul", b"\x00" * 8, b"{}{}")
_TAILS = (b"}", b",", b"garbage", b"\n{}", b"\x00")
_BYTE_CHANGES: dict[str, Callable[[random.Random, bytes, bytes, int], bytes]] = {
    "truncate": lambda rng, value, other, at: value[:at],
    "flip": lambda rng, value, other, at: _flip(rng, value),
    "insert": lambda rng, value, other, at: value[:at] + rng.choice((rng.randbytes(4), *_INSERTS)) + value[at:],
    "delete": lambda rng, value, other, at: value[:at] + value[at + rng.randrange(1, 64) :],
    "repeat": lambda rng, value, other, at: _repeat(rng, value, at),
    "splice": lambda rng, value, other, at: value[:at] + other[rng.randrange(len(other) + 1) :],
    "whitespace": lambda rng, value, other, at: rng.choice(_WHITESPACE) + value + rng.choice((b"", *_WHITESPACE)),
    "replace": lambda rng, value, other, at: rng.choice(_WHOLE),
    "append": lambda rng, value, other, at: value + rng.choice(_TAILS),
}


def _byte_mutation(rng: random.Random, value: bytes, other: bytes, names: list[str]) -> bytes:
    name = rng.choice(sorted(_BYTE_CHANGES))
    names.append(f"bytes:{name}")
    return _BYTE_CHANGES[name](rng, value, other, rng.randrange(len(value) + 1))


# --- Avro -----------------------------------------------------------------------------------------------


@cache
def _envelope(contract: TableContract) -> EnvelopeSchema:
    return EnvelopeSchema.of(contract, TOPIC_PREFIX)


def _avro_value(column: Column, wire: Any) -> Any:
    """A JSON wire value of ``column`` as the Avro envelope carries it."""
    if wire is None:
        return None
    text = wire.text.decode() if isinstance(wire, Raw) else wire
    converted: dict[str, Callable[[], Any]] = {
        "decimal": lambda: Decimal(str(text)),
        "variable_decimal": lambda: {"scale": wire["scale"], "value": base64.b64decode(wire["value"])},
        "bytes": lambda: base64.b64decode(wire),
        "float32": lambda: float(text),
        "float64": lambda: float(text),
        "array": lambda: [_avro_value(column.items, v) for v in wire] if column.items is not None else wire,
    }
    return converted[column.semantic]() if column.semantic in converted else wire


def avro_event(contract: TableContract, seed: bytes) -> dict[str, Any]:
    """A JSON seed event as the decoded Avro envelope of ``contract``."""
    tree = _parse(seed)
    columns = {c.name: c for c in contract.columns}
    for name in ("before", "after"):
        if isinstance(tree.get(name), dict):
            tree[name] = {k: _avro_value(columns[k], v) for k, v in tree[name].items() if k in columns}
    if isinstance(tree.get("ts_ms"), Raw):
        tree["ts_ms"] = None
    return dict(tree)


def avro_bytes(contract: TableContract, event: dict[str, Any]) -> bytes:
    envelope = _envelope(contract)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, envelope.parsed, event)
    return SINGLE_OBJECT_MARKER + envelope.fingerprint + out.getvalue()


_AVRO_EXTREMES: dict[str, Callable[[random.Random], Any]] = {
    "int64": lambda rng: rng.choice((2**63 - 1, -(2**63), *_TIMES)),
    "int32": lambda rng: rng.choice((2**31 - 1, -(2**31), 2**15, 3_000_000, -3_000_000)),
    "variable_decimal": lambda rng: {
        "scale": rng.choice((-(10**7), 1_297_587_212, 2**31 - 1, -(2**31), 39, -39)),
        "value": rng.randbytes(rng.choice((1, 17, 4_000))),
    },
    "decimal": lambda rng: Decimal(rng.choice(("9" * 60, "-" + "9" * 40, "1e-30", "0.001"))),
    "string": lambda rng: rng.choice((*_ODD_STRINGS, _huge_string(rng))),
    "bytes": lambda rng: rng.randbytes(rng.choice((0, 1, 100_000))),
    "array": lambda rng: [None] * rng.choice((0, 1, 10_000)),
}
_AVRO_ALIASES = {
    **dict.fromkeys(("timestamp", "timestamp_millis", "time"), "int64"),
    **dict.fromkeys(("int16", "date"), "int32"),
    **dict.fromkeys(("json", "uuid", "timestamptz"), "string"),
}


def _avro_extreme(rng: random.Random, column: Column) -> Any:
    """An extreme value the column's Avro type still holds (None for the types with nothing extreme)."""
    kind = _AVRO_ALIASES.get(column.semantic, column.semantic)
    return _AVRO_EXTREMES[kind](rng) if kind in _AVRO_EXTREMES else None


def _mutate_avro(rng: random.Random, contract: TableContract, seed: bytes, other: bytes, names: list[str]) -> bytes:
    event = avro_event(contract, seed)
    if rng.random() < 0.6:
        image = event.get("after") or event.get("before")
        source = event.get("source")
        if isinstance(image, dict) and rng.random() < 0.7:
            column = rng.choice(contract.columns)
            image[column.name] = _avro_extreme(rng, column)
            names.append(f"avro:column:{column.semantic}")
        elif isinstance(source, dict):
            key = rng.choice(("ts_ms", "ts_us", "lsn", "txId"))
            source[key] = rng.choice((2**63 - 1, -(2**63), *_TIMES))
            names.append(f"avro:source:{key}")
    try:
        value = avro_bytes(contract, event)
    except (ValueError, TypeError, OverflowError, AttributeError, KeyError) as exc:  # the writer refused it
        names.append(f"avro:unwritable:{type(exc).__name__}")
        value = avro_bytes(contract, avro_event(contract, seed))
    if rng.random() < 0.6 or len(names) == 0:
        body = 10 + rng.randrange(max(1, len(value) - 10))
        if rng.random() < 0.1:  # a header that names another table's schema over this body
            names.append("avro:foreign_header")
            return other[:10] + value[10:]
        return value[:body] + _byte_mutation(rng, value[body:], other[10:], names)
    return value


# --- the entry point ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mutant:
    value: bytes
    mutations: tuple[str, ...]


JSON_MUTATIONS = (
    *(m.__name__.lstrip("_") for m in _TREE_MUTATIONS),
    *(m.__name__.lstrip("_") for m in _CONTRACT_MUTATIONS),
)


def run_on(rng: random.Random, seed: bytes, other: bytes) -> tuple[Mutant, ...]:
    """Records that a reader of newline-delimited JSON could read as other documents than they hold: ``seed``
    cut after one of its colons (left open), ``other`` with one more closing brace, then ``seed`` and
    ``other`` in one record. Each is malformed alone; read together, the first two are one document and the
    third is two, as many documents as records."""
    colons = [i for i in range(len(seed)) if seed[i : i + 1] == b":"]
    opened = seed[: rng.choice(colons) + 1] if colons else b"{"
    both = seed + rng.choice((b"", b" ", b"\t")) + other
    return (
        Mutant(opened, ("run_on:open",)),
        Mutant(other + b"}", ("run_on:closing",)),
        Mutant(both, ("run_on:two_documents",)),
    )


def mutate(rng: random.Random, contract: TableContract, fmt: Format, seed: bytes, other: bytes) -> Mutant:
    """``seed`` (a JSON event of ``contract``) changed by one to three mutations; ``other`` is another seed
    of the same table, for splicing."""
    names: list[str] = []
    if fmt == "avro-single-object":
        other_avro = avro_bytes(contract, avro_event(contract, other))
        return Mutant(_mutate_avro(rng, contract, seed, other_avro, names), tuple(names))
    tree = _parse(seed)
    for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
        if rng.random() < 0.3:
            names.append(rng.choice(_CONTRACT_MUTATIONS)(rng, tree, contract))
        else:
            names.append(rng.choice(_TREE_MUTATIONS)(rng, tree))
    value = dump(tree, rng)
    if fmt == "json-schema":
        value = _wrap(rng, value, contract, names)
    if not names or rng.random() < 0.35:
        value = _byte_mutation(rng, value, other, names)
    return Mutant(value, tuple(names))
