"""Debezium JSON (JsonConverter, with or without the embedded schema) → typed Arrow rows, in bulk.

The values of one topic's batch are parsed in one native pass (:class:`JsonArrowReader`) against the
explicit wire schema derived from the table contract, so decimals are parsed exactly and no per-record
Python runs on the happy path. That reader accepts only what it converts exactly and stops at the first
value it rejects: the rows before it are kept, the rejected value goes through Arrow's general JSON reader
on its own (which either reads it — a form the fast reader leaves to it, or a new column — or finds it
poison), and the fast reader goes on after it. Arrow's reader bisects what it is given, so good values
still decode in bulk and only a poison record ends up alone, as a failure.

Arrow's reader is a C++ parser that trusts its input's shape: it crashes the process on deep nesting and
does not check UTF-8. So every value it is given is first bounded, with vectorised scans of the batch's
bytes: nesting depth (:data:`MAX_DEPTH`) and UTF-8, and no decimal column may hold an exponent of
millions (Arrow's decimal conversion crashes on one). What fails them is refused before any parser sees it.

Its length (past the ~400 lines of most modules): the bounds that keep Arrow's reader from crashing and
the fallback they send values to are one safety argument, read together or not at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple, cast

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from services.common.contracts.arrow import arrow_type
from services.common.contracts.model import TableContract
from services.common.debezium.arrow_reader import NATIVE_READER, VARIABLE_SCALE, JsonArrowReader, UnsupportedSchemaError
from services.common.debezium.envelope import EnvelopeConverter, Origin
from services.common.debezium.records import DecodeFailure, DecodeResult, Reason
from services.common.debezium.values import column_bytes
from services.common.kafka import Message
from services.common.kafka.message_columns import MessageBatch, RecordOrigins

__all__ = ["JsonEventDecoder"]

_MIN_BLOCK = 1 << 22
# After this many values of one batch rejected by the fast reader, Arrow's reader takes the rest: values in
# a form only it reads (a new column, a decimal's text with a sign or leading zeros) would otherwise cost the
# fast reader a call each.
_MAX_REJECTIONS = 16
# JsonConverter's wrapper: an object whose first key is "schema" (JSON allows whitespace around the tokens)
_WRAPPED = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"schema"[ \t\r\n]*:')
MAX_DEPTH = 128
"""The deepest nesting a value may have (the top-level object is level 1). The deepest legitimate one is a
JsonConverter value with its embedded Connect schema for an array column of PostgreSQL's most dimensions
(6): about 15 levels; jsonb arrives as a string, so its nesting does not count. Arrow's reader crashes the
process at ~20,000 levels and Python's ``json`` raises at ~1,000. 128 is the native reader's limit too, so
a record is read or refused alike whichever reader its batch gives it to."""
# Arrow's decimal conversion crashes the process on an exponent of a few million (1e-4999999); one of
# seven or more digits is refused. No decimal the lake holds needs one: PostgreSQL's numeric has at most
# 147,455 digits.
_EXPONENT_DIGITS = 7
_HUGE_EXPONENT = re.compile(rf"[eE][+-]?0*[1-9][0-9]{{{_EXPONENT_DIGITS - 1},}}")
_SCAN_BYTES = 1 << 20  # the batch's bytes are scanned this many at a time (see _found)


def _byte_set(members: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[np.frombuffer(members, dtype=np.uint8)] = True
    return table


# A number Arrow reads as a decimal is a whole JSON token: a bare number, which only a structural byte or
# whitespace may precede or follow, or all of a string's text, which a quote begins and ends. An exponent
# whose token begins or ends with another byte (a letter of a hex id: "TX-2e9123848") is text Arrow refuses
# unconverted, so the screen passes it; only a ``\u`` escape could hide a number's bytes, and it is flagged.
_NUMBER_BYTES = _byte_set(b"0123456789.+-")
_BEFORE_NUMBER = _byte_set(b'"{}[:, \t\r\n')
_AFTER_NUMBER = _byte_set(b'"}], \t\r\n')
_TOKEN_REACH = 32  # bytes looked at either side of an exponent; a token longer than that is flagged
_OPENERS = 0x7B  # "{" and, with the 0x20 bit set, "[" (0x5B): one comparison finds both
_CLOSERS = 0x7D
_BACKSLASH = 0x5C
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class _Screened(NamedTuple):
    """Per value of a batch: nested too deep, not UTF-8 (None: all are), may hold a huge exponent, holds a
    float word as Kafka Connect writes it (None: none does, or the table has no float column)."""

    too_deep: np.ndarray
    not_utf8: np.ndarray | None
    exponents: np.ndarray
    float_words: np.ndarray | None


class _Sorted(NamedTuple):
    """Where :meth:`JsonEventDecoder._sorted_out` sends the values it looked at one at a time (indices into
    the batch): with the batch to Arrow's reader, alone, or first in a read of their own (``unproven``:
    wrappers unwrapped by their head, see :meth:`JsonEventDecoder._unwrapped`); in ``payloads`` what Arrow's
    reader reads instead of a value."""

    bulk: list[int]
    payloads: dict[int, bytes]
    alone: list[int]
    unproven: list[int]


class _Payload(NamedTuple):
    text: bytes
    last: bool  # the wrapper's last member: its text ends where the wrapper's closing brace begins


def _payload_of(value: bytes) -> _Payload | None:
    """The envelope inside JsonConverter's ``{"schema": …, "payload": …}`` (schemas.enable=true), as the native
    reader unwraps it: the wrapper is one JSON object whose ``payload`` member, given once, holds the envelope;
    its other members are checked as JSON and not read (the converter writes ``payload`` last, but one after it
    is skipped like the others). None when there is no such member, it is given twice or the wrapper is not
    one object: the value then fails to parse as it is and goes to the DLQ with its original bytes.
    """
    try:
        members = _members(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not members:
        return None
    payloads = [text for name, text in members if name == "payload"]
    if len(payloads) != 1:
        return None
    return _Payload(payloads[0].encode(), members[-1][0] == "payload")


class JsonEventDecoder:
    """Decodes the Debezium JSON events of one table into rows of its lake schema."""

    def __init__(self, contract: TableContract, *, max_value_bytes: int = 8 << 20, native_reader: bool = True) -> None:
        """``native_reader=False`` (or an install without it) reads every value with Arrow's JSON reader."""
        self.contract = contract
        self._converter = EnvelopeConverter(contract)
        self.schema = self._converter.schema
        self._max_value_bytes = max_value_bytes
        self._decimal_columns = _decimal_columns(self._converter.wire_schema)
        self._float_columns = _float_columns(self._converter.wire_schema)
        # a JsonConverter wrapper's bytes before its payload, as the last one unwrapped in full had them
        self._wrapper_head: bytes | None = None
        self._fast: JsonArrowReader | None = None
        if not (native_reader and NATIVE_READER):
            return
        try:
            self._fast = JsonArrowReader(
                _fast_wire_schema(contract, self._converter.wire_schema),
                strict=("before", "after"),
                envelope="payload",
            )
        except UnsupportedSchemaError:  # a type only Arrow's reader builds: every value goes there
            self._fast = None

    # --- public ---------------------------------------------------------------------------------

    def decode(self, topic: str, batch: MessageBatch, ingested_at_us: int) -> DecodeResult:
        """Rows for ``batch`` (of one topic, each partition's messages in offset order), failures and the
        tombstone count."""
        origin = Origin(topic, ingested_at_us)
        tables: list[pa.Table] = []
        failures: list[DecodeFailure] = []
        if self._fast is None:
            self._decode_general(batch, origin, tables, failures)
        else:
            self._decode_fast(self._fast, batch, origin, tables, failures)
        return DecodeResult.of(self.schema, tables, failures, tombstones=batch.tombstones)

    # --- parsing --------------------------------------------------------------------------------

    def _decode_fast(
        self,
        reader: JsonArrowReader,
        batch: MessageBatch,
        origin: Origin,
        out: list[pa.Table],
        failures: list[DecodeFailure],
    ) -> None:
        """The fast reader over the batch; the values it rejects go through the general path together (a call
        of Arrow's reader costs ~0.4 ms however few values it reads)."""
        start, rejected = 0, []
        while start < len(batch):
            read = reader.read(batch.values, start, max_bytes=self._max_value_bytes)
            if read.rows.num_rows:
                # the values are read: what the rows need now is where they came from, not another copy
                records = batch.part(start, read.stop) if read.taken is None else batch.origins_at(read.taken)
                self._convert(read.rows, records, origin, out, failures)
            if read.rejected is None:
                break
            rejected.append(read.stop)
            start = read.stop + 1
            if len(rejected) > _MAX_REJECTIONS:
                rejected.extend(range(start, len(batch)))
                break
        if rejected:
            self._decode_general(batch.take(np.array(rejected, dtype=np.int64)), origin, out, failures)

    def _decode_general(
        self, batch: MessageBatch, origin: Origin, out: list[pa.Table], failures: list[DecodeFailure]
    ) -> None:
        """Arrow's JSON reader: every form it reads, bisecting down to a poison record."""
        screened = self._screen(batch.values)
        plain = _plain(batch.values, screened, self._max_value_bytes)
        if plain.all():  # nearly every batch: nothing to ask of a value one at a time
            self._decode_bisect(batch, origin, out, failures)
            return
        bulk, payloads, alone, unproven = self._sorted_out(batch, np.flatnonzero(~plain), screened, failures)
        if unproven and (refused := self._decode_unproven(batch, unproven, origin, out, failures, payloads=payloads)):
            again = self._sorted_out(batch, np.array(refused), screened, failures, by_head=False)
            bulk, alone = bulk + again.bulk, alone + again.alone
            for index in refused:  # what the full unwrapping gives, or the value as it is
                payloads.pop(index)
            payloads.update(again.payloads)
        indices = np.union1d(np.flatnonzero(plain), np.array(bulk, dtype=np.int64))
        if len(indices):
            chosen = batch.take(indices)
            if replaced := [index for index in bulk if index in payloads]:
                # unwrapped envelopes stand in for their values (the DLQ still gets the originals)
                values = chosen.value_list()
                for index in replaced:
                    values[int(np.searchsorted(indices, index))] = payloads[index]
                chosen = chosen.with_values(values)
            self._decode_bisect(chosen, origin, out, failures)
        for index in alone:
            self._decode_bisect(batch.part(index, index + 1), origin, out, failures)

    def _decode_unproven(
        self,
        batch: MessageBatch,
        indices: list[int],
        origin: Origin,
        out: list[pa.Table],
        failures: list[DecodeFailure],
        *,
        payloads: dict[int, bytes],
    ) -> list[int]:
        """The payloads of wrappers unwrapped by their head, read without the batch's other values: Arrow's
        reader reading as many rows as payloads proves each one document, and so each wrapper what a full
        unwrapping gives. Halves are read again down to single payloads; the indices of those refused come
        back, to be unwrapped in full."""
        values = [payloads[i] for i in indices]
        chosen = batch.take(np.array(indices, dtype=np.int64)).with_values(values)
        try:
            wire = self._read(values)
        except pa.ArrowInvalid:
            if len(indices) == 1:
                return indices
            half = len(indices) // 2
            return self._decode_unproven(batch, indices[:half], origin, out, failures, payloads=payloads) + (
                self._decode_unproven(batch, indices[half:], origin, out, failures, payloads=payloads)
            )
        self._convert(wire, chosen, origin, out, failures)
        return []

    def _sorted_out(
        self,
        batch: MessageBatch,
        indices: np.ndarray,
        screened: _Screened,
        failures: list[DecodeFailure],
        *,
        by_head: bool = True,
    ) -> _Sorted:
        """The values at ``indices`` (those :func:`_plain` did not clear) one at a time: refused ones become
        failures; the others go to Arrow's reader with the batch (``bulk``; in ``payloads`` what it reads
        instead: a JsonConverter wrapper's envelope, a value with its float words bare), alone (a value with
        a newline cannot share newline-delimited JSON) or, wrappers unwrapped by their head (``by_head``),
        first on their own."""
        sorted_out = _Sorted([], {}, [], [])
        for index, value in zip(indices.tolist(), batch.values.take(indices).to_pylist(), strict=True):
            if value is None:
                continue  # a tombstone: counted once for the whole batch
            if (refused := self._refusal(batch, index, value, screened)) is not None:
                failures.append(refused)
                continue
            envelope, proven = value, True
            words = screened.float_words is not None and bool(screened.float_words[index])
            if _WRAPPED.match(value) and (unwrapped := self._unwrapped(value, by_head and not words)) is not None:
                envelope, proven = unwrapped
                if envelope.lstrip()[:1] != b"{":  # never hand Arrow a value that is no object
                    detail = "the payload is not a JSON object"
                    failures.append(
                        DecodeFailure(batch.message(index), Reason.MALFORMED_JSON, detail, "JSONDecodeError")
                    )
                    continue
            elif value[:1] != b"{" and value.lstrip()[:1] != b"{":
                # Not a JSON object: never hand it to Arrow (pyarrow 26 crashes on a leading `null`).
                failures.append(_classify(batch.message(index), value, "the value is not a JSON object"))
                continue
            elif b"\n" in value:  # cannot share newline-delimited JSON with others
                sorted_out.alone.append(index)
                continue
            if envelope.rstrip(_SPACE_BYTES)[-1:] != b"}":  # see _plain: it would shift the rows after it
                failures.append(_classify(batch.message(index), value, "the value is not one JSON object"))
                continue
            if words:
                # Arrow's reader refuses a float column's word as Kafka Connect writes it ("NaN"): bare, the
                # value is read with the others instead of alone after a bisection
                envelope = _as_the_native_reader_reads(envelope, self._converter.wire_schema) or envelope
            (sorted_out.bulk if proven else sorted_out.unproven).append(index)
            if envelope is not value:
                sorted_out.payloads[index] = envelope
        return sorted_out

    def _unwrapped(self, value: bytes, by_head: bool) -> tuple[bytes, bool] | None:
        """The payload of JsonConverter's wrapper ``value`` and whether it is proven (see :func:`_payload_of`;
        None when there is none). A wrapper that begins with the bytes the last one unwrapped in full had
        before its payload (its schema, the same for every record until the table changes) and ends with a
        brace holds that schema and then its payload, the text in between: unproven until Arrow's reader has
        read it as one document. Else the wrapper is parsed in full (~20 µs of Python) and its head kept."""
        head = self._wrapper_head
        if by_head and head is not None and value.startswith(head):
            body = value[len(head) :].rstrip(_SPACE_BYTES)
            inner = body[:-1].rstrip(_SPACE_BYTES)
            if body[-1:] == b"}" and inner[:1] == b"{" and inner[-1:] == b"}":
                return inner, False
        payload = _payload_of(value)
        if payload is None:
            return None
        if payload.last:  # its text ends the wrapper but for the closing brace: what precedes it is the head
            before = value.rstrip(_SPACE_BYTES)[:-1].rstrip(_SPACE_BYTES)
            self._wrapper_head = before[: len(before) - len(payload.text)]
        return payload.text, True

    def _screen(self, values: pa.LargeBinaryArray) -> _Screened:
        """The vectorised scans of values bound for Arrow's reader."""
        limit = self._max_value_bytes
        exponents = _maybe_huge_exponents(values) if self._decimal_columns else np.zeros(len(values), dtype=bool)
        words = _float_words(values) if self._float_columns else None
        return _Screened(_too_deep(values, limit), _not_utf8(values), exponents, words)

    def _refusal(self, batch: MessageBatch, index: int, value: bytes, screened: _Screened) -> DecodeFailure | None:
        """Why a value must not reach Arrow's reader at all, or None."""
        limit = self._max_value_bytes
        if len(value) > limit:
            detail = f"value of {len(value)} bytes exceeds the {limit}-byte limit"
            return DecodeFailure(batch.message(index), Reason.OVERSIZED, detail, "OversizedRecord")
        if screened.too_deep[index]:
            detail = f"nested deeper than {MAX_DEPTH} levels"
            return DecodeFailure(batch.message(index), Reason.TOO_DEEP, detail, "TooDeep")
        if screened.not_utf8 is not None and screened.not_utf8[index]:
            return _classify(batch.message(index), value, "the value is not valid UTF-8")
        if screened.exponents[index]:
            return self._huge_exponent(batch.message(index), value)
        return None

    def _huge_exponent(self, message: Message, value: bytes) -> DecodeFailure | None:
        """The failure of a value (one :func:`_maybe_huge_exponents` flagged) with a decimal column Arrow's
        conversion would crash on, else None: the value is parsed (its depth is bounded by now) and every key
        naming a decimal column is checked, duplicates too."""
        shape = _shape_failure(message, value)
        if shape is not None:  # whatever it is, Arrow's reader is not given it
            return shape
        found: list[str] = []

        def check(pairs: list[tuple[str, object]]) -> None:
            found.extend(key for key, item in pairs if key in self._decimal_columns and _has_huge_exponent(item))

        json.loads(value, object_pairs_hook=check, parse_int=str, parse_float=str, parse_constant=str)
        if not found:
            return None
        detail = f"column {found[0]}: a decimal exponent of {_EXPONENT_DIGITS} or more digits"
        return DecodeFailure(message, Reason.OUT_OF_RANGE, detail, "OutOfRange", column=found[0])

    def _convert(
        self,
        wire: pa.Table,
        records: RecordOrigins,
        origin: Origin,
        out: list[pa.Table],
        failures: list[DecodeFailure],
    ) -> None:
        table = self._converter.to_lake(wire, records, origin, failures)
        if table.num_rows:
            out.append(table)

    def _decode_bisect(
        self,
        batch: MessageBatch,
        origin: Origin,
        out: list[pa.Table],
        failures: list[DecodeFailure],
    ) -> None:
        if not len(batch):
            return
        values = cast(list[bytes], batch.value_list())  # the general path hands over no tombstones
        try:
            wire = self._read(values)
        except pa.ArrowInvalid as exc:
            if len(batch) == 1:
                self._decode_alone(batch, origin, out, failures, arrow_error=str(exc))
                return
            for half in batch.split():
                self._decode_bisect(half, origin, out, failures)
            return
        self._convert(wire, batch, origin, out, failures)

    def _decode_alone(
        self,
        batch: MessageBatch,
        origin: Origin,
        out: list[pa.Table],
        failures: list[DecodeFailure],
        *,
        arrow_error: str,
    ) -> None:
        """One value Arrow's reader refused, read again in the form the native reader reads it: without the
        members of the envelope the wire schema has no place for (Arrow's reader infers them, so that new
        columns of a row image show, and refuses a value whose unknown member it cannot infer), and with a
        float column's NaN and infinities, which Kafka Connect writes as strings, as the bare words Arrow's
        reader takes. Every other member's text is untouched; refused again, the value is a failure."""
        value = cast(bytes, batch.value_list()[0])
        repaired = _as_the_native_reader_reads(value, self._converter.wire_schema)
        if repaired is not None:
            try:
                wire = self._read([repaired])
            except pa.ArrowInvalid:
                pass
            else:
                self._convert(wire, batch, origin, out, failures)
                return
        failure = _classify(batch.message(0), value, arrow_error)
        if failure.reason == Reason.WRONG_TYPE and (outside := self._outside_years(value)):
            column, detail = outside
            failure = DecodeFailure(failure.message, Reason.OUT_OF_RANGE, detail, "OutOfRange", column=column)
        failures.append(failure)

    def _outside_years(self, value: bytes) -> tuple[str, str] | None:
        """:meth:`EnvelopeConverter.outside_years` of a value that is one JSON object (:func:`_classify` found no
        other fault), wrapped by JsonConverter or not; None when it does not parse after all (the failure stands)."""
        try:
            event = json.loads(value, parse_int=str, parse_float=str, parse_constant=str)
        except (ValueError, RecursionError):
            return None
        if isinstance(event, dict) and isinstance(event.get("payload"), dict):
            event = event["payload"]
        return self._converter.outside_years(event) if isinstance(event, dict) else None

    def _read(self, values: Sequence[bytes]) -> pa.Table:
        """Arrow's reader over ``values``, one row for each or ArrowInvalid: it reads every document a line holds,
        so a value of two documents shows only in the count (see :func:`_plain`)."""
        payload = b"\n".join(values)
        block = max(_MIN_BLOCK, 2 * max(map(len, values)) + 2)
        try:
            table = pj.read_json(
                pa.BufferReader(payload),
                read_options=pj.ReadOptions(use_threads=True, block_size=block),
                parse_options=pj.ParseOptions(
                    explicit_schema=self._converter.wire_schema,
                    unexpected_field_behavior="infer",
                    newlines_in_values=len(values) == 1,
                ),
            ).combine_chunks()
        except UnicodeDecodeError as exc:  # an unexpected field whose *name* is not UTF-8: Arrow raises this
            raise pa.ArrowInvalid(f"a field name is not valid UTF-8: {exc}") from exc
        if table.num_rows != len(values):
            raise pa.ArrowInvalid(f"{table.num_rows} rows parsed from {len(values)} values")
        table.validate(full=True)  # the reader does not check UTF-8; invalid text must not reach Parquet
        _check_declared_columns(table.schema, self._converter.wire_schema)
        return table


_SPACE = " \t\r\n"
_SPACE_BYTES = _SPACE.encode()


_IMAGES = frozenset({"before", "after"})
"""Their unknown members are new columns, which Arrow's reader must see: never dropped."""


# Kafka Connect's JsonConverter writes a float's NaN and infinities as strings; Arrow's reader takes them bare.
_FLOAT_WORDS = {'"NaN"': "NaN", '"Infinity"': "Infinity", '"-Infinity"': "-Infinity"}
# "-Infinity" holds "Infinity": two literal searches find all three
_FIND_FLOAT_WORD = tuple(re.compile(re.escape(word)).finditer for word in (b'"NaN"', b'Infinity"'))


def _as_the_native_reader_reads(value: bytes, schema: pa.Schema) -> bytes | None:
    """The JSON envelope ``value`` without the members ``schema`` has no place for — at its top level and in
    its structs other than the row images — and with the float words of the row images' float columns bare,
    every other member's text as it was; None when nothing changes, a name repeats, or ``value`` is not one
    well-formed object."""
    try:
        kept = _kept(value.decode("utf-8"), {f.name: f.type for f in schema})
    except (UnicodeDecodeError, ValueError, RecursionError):  # not JSON, or deeper than Python parses
        return None
    return None if kept is None or kept[1] is False else kept[0].encode()


def _kept(text: str, fields: dict[str, pa.DataType]) -> tuple[str, bool] | None:
    """``text`` (one JSON object) with only the members ``fields`` names, and whether anything changed."""
    members = _members(text)
    if members is None or len({name for name, _ in members}) < len(members):
        return None
    changed, parts = False, []
    for name, text_of in members:
        kind = fields.get(name)
        if kind is None:
            changed = True
            continue
        item = text_of
        if pa.types.is_struct(kind) and item.startswith("{"):
            inner = _image(item, kind) if name in _IMAGES else _kept(item, {f.name: f.type for f in kind})
            if inner is None:
                return None
            item, changed = inner[0], changed or inner[1]
        parts.append(f"{json.dumps(name)}:{item}")
    return "{" + ",".join(parts) + "}", changed


def _image(text: str, kind: pa.StructType) -> tuple[str, bool] | None:
    """A row image with its float columns' words bare (every member kept: unknown ones are new columns),
    and whether any was."""
    members = _members(text)
    if members is None:
        return None
    floats = {f.name: f.type for f in kind if _holds_floats(f.type)}
    changed, parts = False, []
    for name, item in members:
        kind_of = floats.get(name)
        bare = item
        if kind_of is not None and pa.types.is_list(kind_of) and item.startswith("["):
            elements = _elements(item)
            if elements is None:
                return None
            bare = "[" + ",".join(_FLOAT_WORDS.get(e, e) for e in elements) + "]"
        elif kind_of is not None:
            bare = _FLOAT_WORDS.get(item, item)
        changed = changed or bare != item
        parts.append(f"{json.dumps(name)}:{bare}")
    return "{" + ",".join(parts) + "}", changed


def _holds_floats(kind: pa.DataType) -> bool:
    """A float column, alone or in a list: where Kafka Connect writes NaN and the infinities as words."""
    return bool(pa.types.is_floating(kind) or (pa.types.is_list(kind) and pa.types.is_floating(kind.value_type)))


def _elements(text: str) -> list[str] | None:
    """The texts of the elements of the one JSON array ``text`` holds; None when it is not one array. Raises
    ValueError on an element that is not JSON."""
    items = _items(text, "[]", keyed=False)
    return None if items is None else [item for _, item in items]


def _members(text: str) -> list[tuple[str, str]] | None:
    """The members of the one JSON object ``text`` holds, as (name, the value's text); None when ``text`` is
    not one object. Raises ValueError on a member that is not JSON."""
    return _items(text, "{}", keyed=True)


def _items(text: str, brackets: str, *, keyed: bool) -> list[tuple[str, str]] | None:
    """(name, the value's text) of each item of the one JSON object or array ``text`` holds (``brackets``:
    ``"{}"`` or ``"[]"``; names are "" in an array); None when ``text`` is not one."""
    opening, closing = brackets[0], brackets[1]
    decoder = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)
    at = _skip_space(text, 0)
    if text[at : at + 1] != opening:
        return None
    items: list[tuple[str, str]] = []
    at = _skip_space(text, at + 1)
    if text[at : at + 1] == closing:
        return items if _skip_space(text, at + 1) == len(text) else None
    while True:
        name: object = ""
        if keyed:
            name, at = decoder.raw_decode(text, at)
            at = _skip_space(text, at)
            if not isinstance(name, str) or text[at : at + 1] != ":":
                return None
            at = _skip_space(text, at + 1)
        start = at
        _, at = decoder.raw_decode(text, start)
        items.append((str(name), text[start:at]))
        at = _skip_space(text, at)
        separator = text[at : at + 1]
        if separator not in (",", closing):
            return None
        at = _skip_space(text, at + 1)
        if separator == closing:
            return items if at == len(text) else None


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def _check_declared_columns(read: pa.Schema, wire: pa.Schema) -> None:
    """ArrowInvalid when a contract column was read as another type than declared.

    Arrow's reader adds the keys it does not expect, also inside a column's own struct (a ``{scale,
    value}`` with a third key); the row images then differ in type and could not be combined.
    """
    for image in ("before", "after"):
        found = read.field(image).type
        for column in wire.field(image).type:
            actual = found.field(column.name).type
            if not actual.equals(column.type):
                raise pa.ArrowInvalid(f"column {column.name} read as {actual}, not {column.type}: {_NO_PLACE}")


def _fast_wire_schema(contract: TableContract, wire: pa.Schema) -> pa.Schema:
    """The wire schema with unconstrained NUMERIC columns read straight into their lake decimals."""
    variable = {c.name: arrow_type(c) for c in contract.columns if c.semantic == "variable_decimal"}

    def image(field: pa.Field) -> pa.Field:
        columns = [
            pa.field(f.name, variable[f.name], metadata=VARIABLE_SCALE) if f.name in variable else f for f in field.type
        ]
        return field.with_type(pa.struct(columns))

    return pa.schema([image(f) if f.name in ("before", "after") else f for f in wire])


def _decimal_columns(wire: pa.Schema) -> frozenset[str]:
    """The row-image columns Arrow's reader converts to decimals (alone or in lists)."""

    def decimal(arrow: pa.DataType) -> bool:
        return pa.types.is_decimal(arrow) or (pa.types.is_list(arrow) and decimal(arrow.value_type))

    return frozenset(f.name for f in wire.field("after").type if decimal(f.type))


def _float_columns(wire: pa.Schema) -> frozenset[str]:
    """The row-image columns of a float type (alone or in lists)."""
    return frozenset(f.name for f in wire.field("after").type if _holds_floats(f.type))


def _float_words(values: pa.LargeBinaryArray) -> np.ndarray | None:
    """Which values hold a float word as Kafka Connect writes it (``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``) anywhere, in a text column too (a superset); None when none does. One search of the
    batch's bytes for each word."""
    data, offsets = column_bytes(values)
    hits = [found.start() for search in _FIND_FLOAT_WORD for found in search(data.data)]
    if not hits:
        return None
    flagged = np.zeros(len(values), dtype=bool)
    flagged[np.searchsorted(offsets, np.array(hits), side="right") - 1] = True
    return flagged


def _has_huge_exponent(item: object) -> bool:
    if isinstance(item, str):
        return _HUGE_EXPONENT.search(item) is not None
    return isinstance(item, list) and any(_has_huge_exponent(element) for element in item)


# Arrow's reader names the decimal type a number does not fit ("Failed to convert JSON to decimal128(10, 2):
# 1.234 requires scale 3"); the word in a column's name ("list_variable_decimal") says nothing of the value.
_ARROW_DECIMAL = re.compile(r"\bdecimal(?:32|64|128|256)\b", re.IGNORECASE)
# How a column read as another type than declared is refused (:func:`_check_declared_columns`), and how Arrow
# refuses a decimal column's text that is no number ("The string 'x1e5' is not a valid decimal128 number",
# "Empty string cannot be converted to decimal128"): a wrong type, whatever types the message names.
_NO_PLACE = "a key it has no place for"
_NOT_A_DECIMAL = (_NO_PLACE, "is not a valid", "Empty string")


def _classify(message: Message, value: bytes, arrow_error: str) -> DecodeFailure:
    """Why one record alone does not parse. Total: whatever the value, a failure comes back."""
    shape = _shape_failure(message, value)
    if shape is not None:
        return shape
    if _ARROW_DECIMAL.search(arrow_error) and not any(words in arrow_error for words in _NOT_A_DECIMAL):
        return DecodeFailure(message, Reason.DECIMAL_OVERFLOW, arrow_error, "DecimalOverflow")
    return DecodeFailure(message, Reason.WRONG_TYPE, arrow_error, "TypeMismatch")


def _shape_failure(message: Message, value: bytes) -> DecodeFailure | None:
    """The failure of a value that is not a JSON object at all (not UTF-8, too deep, not JSON), else None."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DecodeFailure(message, Reason.INVALID_UTF8, str(exc), "UnicodeDecodeError")
    if _depth(value) > MAX_DEPTH:
        return DecodeFailure(message, Reason.TOO_DEEP, f"nested deeper than {MAX_DEPTH} levels", "TooDeep")
    try:
        # numbers stay text: only the document's shape matters here, and int() refuses over 4,300 digits
        document = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    except RecursionError:
        return DecodeFailure(message, Reason.TOO_DEEP, "nested too deep for the JSON parser", "TooDeep")
    except ValueError as exc:  # JSONDecodeError, and whatever else the parser refuses
        return DecodeFailure(message, Reason.MALFORMED_JSON, str(exc), type(exc).__name__)
    if not isinstance(document, dict):
        return DecodeFailure(message, Reason.MALFORMED_JSON, "the value is not a JSON object", "JSONDecodeError")
    return None


# --- bounds checked before Arrow's reader sees a value ---------------------------------------------


def _not_utf8(values: pa.LargeBinaryArray) -> np.ndarray | None:
    """Which values are not valid UTF-8, or None when all are (one vectorised validation, the usual case)."""
    try:
        values.cast(pa.large_string())
    except pa.ArrowInvalid:
        return np.array([v is not None and not _is_utf8(v) for v in values.to_pylist()], dtype=bool)
    return None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _maybe_huge_exponents(values: pa.LargeBinaryArray) -> np.ndarray:
    """Which values may hold an exponent of :data:`_EXPONENT_DIGITS` or more digits: ``e``/``E``, maybe a
    sign, then that many digits, in a token that may be a number (:func:`_may_be_a_number`), or a ``\\u``
    escape that could spell one. Vectorised over the batch's bytes, looking only after each ``e``/``E`` and
    backslash; a flagged value is then checked exactly."""
    data, offsets = column_bytes(values)
    flagged = np.zeros(len(values), dtype=bool)
    if len(data) < _EXPONENT_DIGITS + 1:
        return flagged
    markers = _found(data, _exponent_markers, lookahead=1)
    signs = markers[(data[markers + 1] == 0x2B) | (data[markers + 1] == 0x2D)]
    backslashes = _found(data, _backslashes)
    backslashes = backslashes[backslashes + 1 < len(data)]
    unsigned = markers[_digits_follow(data, markers + 1)]
    signs = signs[_digits_follow(data, signs + 2)]
    hits = np.concatenate(
        [
            unsigned[_may_be_a_number(data, offsets, unsigned, unsigned + 1)],
            signs[_may_be_a_number(data, offsets, signs, signs + 2)],
            backslashes[data[backslashes + 1] == 0x75],  # \u
        ]
    )
    if len(hits):
        flagged[np.searchsorted(offsets, hits, side="right") - 1] = True
    return flagged


def _may_be_a_number(data: np.ndarray, offsets: np.ndarray, markers: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """For each exponent marker (its exponent's digits starting at ``digits``), whether its token may be a
    number: the nearest byte before it that no number holds may begin one, and the first byte after its
    digits may end one. A token that reaches its value's edges, or :data:`_TOKEN_REACH` bytes, is kept."""
    value = np.searchsorted(offsets, markers, side="right") - 1
    first, end = offsets[value][:, None], offsets[value + 1][:, None]
    rows, reach = np.arange(len(markers)), np.arange(1, _TOKEN_REACH + 1)
    before = markers[:, None] - reach
    before_bytes = data[np.maximum(before, first)]
    outside = ~_NUMBER_BYTES[before_bytes] & (before >= first)
    begins = ~outside.any(axis=1) | _BEFORE_NUMBER[before_bytes[rows, outside.argmax(axis=1)]]
    after = digits[:, None] + reach
    after_bytes = data[np.minimum(after, end - 1)]
    past = ((after_bytes < 0x30) | (after_bytes > 0x39)) & (after < end)
    ends = ~past.any(axis=1) | _AFTER_NUMBER[after_bytes[rows, past.argmax(axis=1)]]
    kept: np.ndarray = begins & ends
    return kept


def _exponent_markers(data: np.ndarray) -> np.ndarray:
    """Where ``e`` or ``E`` is followed by a sign or a digit ("+,-./0-9": a superset, in one comparison) — rare
    outside numbers, however many letters e the text holds; the last byte is not looked at."""
    return np.flatnonzero(((data[:-1] | 0x20) == 0x65) & ((data[1:] - 0x2B) <= 0x39 - 0x2B))


def _backslashes(data: np.ndarray) -> np.ndarray:
    return np.flatnonzero(data == _BACKSLASH)


def _openers(data: np.ndarray) -> np.ndarray:
    return np.flatnonzero((data | 0x20) == _OPENERS)


def _newlines(data: np.ndarray) -> np.ndarray:
    return np.flatnonzero(data == 0x0A)


def _found(data: np.ndarray, find: Callable[[np.ndarray], np.ndarray], *, lookahead: int = 0) -> np.ndarray:
    """The positions ``find`` gives in ``data``, which it scans :data:`_SCAN_BYTES` at a time, each piece
    with ``lookahead`` bytes of the next (``find`` must give no position among those): a piece's temporary
    arrays stay in the processor's cache, where a whole batch's would not."""
    if len(data) <= _SCAN_BYTES:
        return find(data)
    pieces = [find(data[at : at + _SCAN_BYTES + lookahead]) + at for at in range(0, len(data), _SCAN_BYTES)]
    return np.concatenate(pieces)


def _digits_follow(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each start, whether :data:`_EXPONENT_DIGITS` digits begin there (False past the end)."""
    found = np.zeros(len(starts), dtype=bool)
    inside = np.flatnonzero(starts + _EXPONENT_DIGITS <= len(data))
    first = data[starts[inside]]
    inside = inside[(first >= 0x30) & (first <= 0x39)]  # most letters e/E are followed by a letter: out early
    block = data[starts[inside, None] + np.arange(1, _EXPONENT_DIGITS)]
    found[inside] = ((block >= 0x30) & (block <= 0x39)).all(axis=1)
    return found


_SCHEMA_NAME = np.frombuffer(b'"schema"', dtype=np.uint8)


def _plain(values: pa.LargeBinaryArray, screened: _Screened, max_bytes: int) -> np.ndarray:
    """Which values Arrow's reader takes as they stand, decided over the batch's bytes at once: present, within
    ``max_bytes``, cleared by every screen, on one line, and an object whose first member is not named
    ``"schema"`` (``{"`` at its very start, so no JsonConverter wrapper) and whose last byte is ``}``. Every
    other value is looked at on its own; this only spares the usual ones a Python step each.

    Arrow's reader reads as many documents as a line holds and lets one run on over the next line, so the
    batch's rows match its values only when no value is two documents or an open one; a value that begins
    with ``{`` and ends with ``}`` cannot leave one open (a string may not hold a newline), so one with two
    documents changes the row count, which :meth:`JsonEventDecoder._read` checks."""
    data, offsets = column_bytes(values)
    starts, lengths = offsets[:-1], np.diff(offsets)
    plain: np.ndarray = (lengths >= 2) & (lengths <= max_bytes) & ~screened.too_deep & ~screened.exponents
    if values.null_count:
        plain &= np.asarray(values.is_valid())
    for flagged in (screened.not_utf8, screened.float_words):
        if flagged is not None:
            plain &= ~flagged
    at = np.flatnonzero(plain)
    plain[at] = (
        (data[starts[at]] == ord("{")) & (data[starts[at] + 1] == ord('"')) & (data[offsets[at + 1] - 1] == ord("}"))
    )
    at = np.flatnonzero(plain & (lengths > len(_SCHEMA_NAME)))
    named = data[starts[at, None] + np.arange(1, len(_SCHEMA_NAME) + 1)]
    plain[at[(named == _SCHEMA_NAME).all(axis=1)]] = False
    newlines = _found(data, _newlines)
    if len(newlines):
        plain[np.searchsorted(offsets, newlines, side="right") - 1] = False
    return plain


def _too_deep(values: pa.LargeBinaryArray, max_bytes: int) -> np.ndarray:
    """Which values nest deeper than :data:`MAX_DEPTH`.

    Depth cannot exceed the number of ``{``/``[`` bytes, so one vectorised count over the batch clears
    nearly every value; only one with more of them than the limit (a jsonb text full of brackets, or an
    attack) gets the exact scan.
    """
    counts = _opener_counts(values)
    deep = np.zeros(len(values), dtype=bool)
    for index in np.flatnonzero(counts > MAX_DEPTH):
        value = values[int(index)].as_py()
        # an oversized value is refused as such, unscanned
        deep[index] = value is not None and len(value) <= max_bytes and _depth(value) > MAX_DEPTH
    return deep


def _opener_counts(values: pa.LargeBinaryArray) -> np.ndarray:
    """The number of ``{`` and ``[`` bytes in each value, strings included."""
    data, offsets = column_bytes(values)
    if not len(data):
        return np.zeros(len(values), dtype=np.int64)
    at = _found(data, _openers)  # where they are, in order: count them per value by bisection
    return np.diff(np.searchsorted(at, offsets))


def _depth(value: bytes) -> int:
    """The deepest nesting of ``{``/``[`` in ``value`` outside JSON strings.

    Strings (escapes included) are cut out in one C-level pass; an unterminated one stays, so its brackets
    count and the estimate errs deep. The rest is a running sum in numpy, in memory a few times the value's.
    """
    outside = np.frombuffer(_STRING.sub(b"", value), dtype=np.uint8)
    folded = outside | 0x20
    step = (folded == _OPENERS).astype(np.int8) - (folded == _CLOSERS).astype(np.int8)
    return int(np.cumsum(step, dtype=np.int32).max(initial=0))
