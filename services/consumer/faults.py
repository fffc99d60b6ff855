"""Fault injection for tests, kept out of the settings: nothing here is configurable in production.

Environment variables, read once, at import, by this module only; unset (always, outside tests), each check is
one comparison per batch:

- ``CDCFLOW_TEST_DECODE_CRASH_MARKER``: a process about to decode a batch in which a value contains these bytes
  kills itself with SIGSEGV, as a native decoder that crashes on that record would. The writer and the isolated
  process that re-decodes a crashed batch record by record both go through :func:`crash_if_marked`, so the
  marked record is the one that dies there too.
- ``CDCFLOW_TEST_DECODE_HANG_MARKER``: the same, but the process hangs (sleeps for ever) instead of dying, as a
  runaway conversion would; the decode watchdog ends it (``writer.decode_timeout_s``).
- ``CDCFLOW_TEST_DECODE_ERROR_MARKER``: decoding a batch in which a value contains these bytes raises
  ``RuntimeError``, as a decoder with a defect would (:func:`raise_if_marked`).
- ``CDCFLOW_TEST_WRITE_FAILURE_MARKER``: writing (or test-encoding) rows of which a string column holds this
  text raises ``ValueError``, as a row the lake cannot take would (:func:`fail_write_if_marked`).
"""

from __future__ import annotations

import os
import signal
import time

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CRASH_MARKER_ENV",
    "ERROR_MARKER_ENV",
    "HANG_MARKER_ENV",
    "WRITE_FAILURE_MARKER_ENV",
    "crash_if_marked",
    "fail_write_if_marked",
    "raise_if_marked",
]

CRASH_MARKER_ENV = "CDCFLOW_TEST_DECODE_CRASH_MARKER"
ERROR_MARKER_ENV = "CDCFLOW_TEST_DECODE_ERROR_MARKER"
HANG_MARKER_ENV = "CDCFLOW_TEST_DECODE_HANG_MARKER"
WRITE_FAILURE_MARKER_ENV = "CDCFLOW_TEST_WRITE_FAILURE_MARKER"
_MARKER: bytes | None = os.environ.get(CRASH_MARKER_ENV, "").encode() or None
_ERROR_MARKER: bytes | None = os.environ.get(ERROR_MARKER_ENV, "").encode() or None
_HANG_MARKER: bytes | None = os.environ.get(HANG_MARKER_ENV, "").encode() or None
_WRITE_MARKER: str | None = os.environ.get(WRITE_FAILURE_MARKER_ENV) or None


def crash_if_marked(values: pa.Array) -> None:
    """Die now, by SIGSEGV, when a value holds the crash marker, or hang for ever when one holds the hang
    marker (only ever under the test variables)."""
    if _MARKER is None and _HANG_MARKER is None:
        return
    listed = values.to_pylist()
    if _MARKER is not None and any(value is not None and _MARKER in value for value in listed):
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)  # no handler may turn it into something gentler
        os.kill(os.getpid(), signal.SIGSEGV)
    if _HANG_MARKER is not None and any(value is not None and _HANG_MARKER in value for value in listed):
        while True:
            time.sleep(60)


def raise_if_marked(values: pa.Array) -> None:
    """Raise ``RuntimeError`` when a value holds the decode-error marker (only ever under the test variable)."""
    if _ERROR_MARKER is None:
        return
    if any(value is not None and _ERROR_MARKER in value for value in values.to_pylist()):
        raise RuntimeError("injected decoder defect: a value holds the marker")


def fail_write_if_marked(rows: pa.Table) -> None:
    """Raise ``ValueError`` when a string column holds the write-failure marker (only ever under the test
    variable)."""
    if _WRITE_MARKER is None:
        return
    for column in rows.itercolumns():
        if pa.types.is_string(column.type) and pc.any(pc.match_substring(column, _WRITE_MARKER)).as_py():
            raise ValueError(f"injected write failure: a row holds {_WRITE_MARKER!r}")
