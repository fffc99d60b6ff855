"""The writer's safety net around decoding: a decoder that raises costs the records that make it raise, no more.

Decoders return failures as values; one that raises instead has a defect. Any exception but a transient one
(which means "read these records again later"), and a panic of native code, is met by decoding the halves of
the batch again, down to single records: each record that still makes the decoder raise on its own becomes a
``decoder_error`` failure carrying the exception's class and message, and every other record decodes as usual.

pyo3 turns a Rust panic into ``pyo3_runtime.PanicException``, which derives from ``BaseException`` so that
``except Exception`` does not swallow it. Each extension module defines that class for itself, so there is no
one class to import: it is recognised by its qualified name, and every other ``BaseException``
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``) goes on unhandled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pyarrow as pa

from services.common.debezium.records import DecodeFailure, DecodeResult, Reason
from services.common.errors import TransientError
from services.common.kafka import Message
from services.common.kafka.message_columns import MessageBatch
from services.common.lake import LakeFile
from services.common.lake.errors import LakeNotFoundError

__all__ = ["DiscardLake", "decode_isolating", "defect_failure", "describe", "failing_rows", "is_native_panic"]

_MAX_DETAIL = 1_000
_T = TypeVar("_T")
_R = TypeVar("_R")
_NO_ROWS = pa.table({})


def is_native_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic that crossed into Python through pyo3."""
    return any(k.__name__ == "PanicException" and k.__module__ == "pyo3_runtime" for k in type(exc).__mro__)


def describe(exc: BaseException) -> str:
    """``Class: message``, bounded: the detail of a DLQ record (a message can be as long as the value)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "…"


def defect_failure(message: Message, exc: BaseException, stage: str = "decode") -> DecodeFailure:
    return DecodeFailure(message, Reason.DECODER_ERROR, describe(exc), type(exc).__name__, stage)


def _attempt(call: Callable[[_T], _R], argument: _T) -> tuple[_R | None, BaseException | None]:
    """``call(argument)`` and no defect, or no result and the defect it raised: an ``Exception`` or a native
    panic. A transient error, or any other ``BaseException`` (an interrupt, an exit), goes on to the caller."""
    try:
        return call(argument), None
    except TransientError:
        raise
    except Exception as exc:
        return None, exc
    except BaseException as exc:
        if not is_native_panic(exc):
            raise
        return None, exc


def decode_isolating(decode: Callable[[MessageBatch], DecodeResult], batch: MessageBatch) -> list[DecodeResult]:
    """``decode(batch)`` as one result or, when it raises, the results of its halves, in batch order.

    A transient error goes on to the caller (the whole batch is read again later); so does any
    ``BaseException`` that is not a native panic.
    """
    decoded, defect = _attempt(decode, batch)
    if defect is None:
        assert decoded is not None
        return [decoded]
    if len(batch) <= 1:
        failures = [defect_failure(batch.message(0), defect)] if len(batch) else []
        return [DecodeResult(_NO_ROWS, failures)]
    left, right = batch.split()
    return [*decode_isolating(decode, left), *decode_isolating(decode, right)]


def failing_rows(check: Callable[[pa.Table], object], rows: pa.Table) -> list[tuple[int, BaseException]]:
    """The row indexes of ``rows`` on which ``check`` raises on its own, each with its exception, found by
    bisection (a transient error or any other ``BaseException`` goes on)."""
    failing: list[tuple[int, BaseException]] = []
    _bisect_rows(check, rows, 0, failing)
    return failing


def _bisect_rows(
    check: Callable[[pa.Table], object], rows: pa.Table, offset: int, failing: list[tuple[int, BaseException]]
) -> None:
    _, defect = _attempt(check, rows)
    if defect is None:
        return
    if rows.num_rows <= 1:
        failing.extend((offset, defect) for _ in range(rows.num_rows))
        return
    half = rows.num_rows // 2
    _bisect_rows(check, rows.slice(0, half), offset, failing)
    _bisect_rows(check, rows.slice(half), offset + half, failing)


class DiscardLake:
    """A lake that stores nothing: what a write would encode is checked without a file being made."""

    def write(self, path: str, data: bytes) -> LakeFile:
        return LakeFile(path, len(data), "0")

    def write_if(self, path: str, data: bytes, *, version: str | None) -> LakeFile:
        return self.write(path, data)

    def read(self, path: str) -> bytes:
        raise LakeNotFoundError(path)

    def list(self, prefix: str = "") -> Iterator[LakeFile]:
        return iter(())

    def delete(self, path: str) -> None:
        return None

    def move(self, src: str, dst: str, *, version: str | None = None) -> LakeFile:
        raise LakeNotFoundError(src)

    def uri(self, path: str) -> str:
        return f"discard:///{path}"

    def exists(self, path: str) -> bool:
        return False

    def close(self) -> None:
        return None
