"""The writer's safety net: a decoder that raises or panics, a row that cannot be written, a record that kills
the process — each costs its own records, never the batch or the process (real Message objects, real child
processes, no Kafka)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from services.common.contracts.catalog import bounded_dsn, contracts_from_catalog
from services.common.contracts.errors import CatalogUnreachableError
from services.common.debezium.records import DecodeResult, Reason
from services.common.errors import TransientError
from services.common.kafka.message_columns import MessageBatch
from services.common.lake import open_lake
from services.common.metrics import WriterMetrics, new_registry
from services.common.settings import LakeSettings, load_settings, repo_root
from services.consumer.errors import CatalogUnavailableError
from services.consumer.evolution import CatalogEvolution
from services.consumer.faults import CRASH_MARKER_ENV
from services.consumer.guard import decode_isolating, failing_rows, is_native_panic
from services.consumer.quarantine import InflightNote, Quarantine, dead_notes, find_crashers

TOPIC = "cdcflow.lending.transactions"


class PanicException(BaseException):
    """What pyo3 raises for a Rust panic: its own class per extension module, named like this one."""


PanicException.__module__ = "pyo3_runtime"


def _messages(values: Sequence[bytes | None], first_offset: int = 100, partition: int = 2) -> list[Message]:
    return [
        Message(
            topic=TOPIC,
            partition=partition,
            offset=first_offset + i,
            key=f'{{"id":{i}}}'.encode(),
            value=value,
            headers=[("origin", f"h{i}".encode())],
            timestamp=(TIMESTAMP_CREATE_TIME, 1_795_387_781_000 + i),
        )
        for i, value in enumerate(values)
    ]


def _rows_decoder(raises: dict[bytes, BaseException]) -> tuple[list[int], Callable[[MessageBatch], DecodeResult]]:
    """A decoder whose rows are the batch's offsets, that raises ``raises[marker]`` on a batch holding a value
    with ``marker``; also returns the size of every batch it was given."""
    calls: list[int] = []

    def decode(batch: MessageBatch) -> DecodeResult:
        calls.append(len(batch))
        for value in batch.value_list():
            for marker, exc in raises.items():
                if value is not None and marker in value:
                    raise exc
        offsets = pa.array(batch.offsets, type=pa.int64())
        partitions = pa.array(batch.partitions, type=pa.int32())
        return DecodeResult(pa.table({"_kafka_partition": partitions, "_kafka_offset": offsets}))

    return calls, decode


def _landed(results: list[DecodeResult]) -> list[int]:
    return [o for r in results if r.rows.num_rows for o in r.rows.column("_kafka_offset").to_pylist()]


def test_a_decoder_that_raises_costs_only_the_records_that_make_it_raise() -> None:
    values = [f'{{"n":{i}}}'.encode() for i in range(64)]
    values[5] = b'{"boom":1}'
    values[40] = b'{"boom":2}'
    calls, decode = _rows_decoder({b"boom": ValueError("year 33658 is out of range")})
    results = decode_isolating(decode, MessageBatch.of(_messages(values)))

    failures = [f for r in results for f in r.failures]
    assert [(f.message.offset(), f.reason, f.error_class) for f in failures] == [
        (105, Reason.DECODER_ERROR, "ValueError"),
        (140, Reason.DECODER_ERROR, "ValueError"),
    ]
    assert all("year 33658 is out of range" in f.detail for f in failures)
    assert failures[0].message.value() == b'{"boom":1}'
    assert failures[0].message.headers() == [("origin", b"h5")]
    assert _landed(results) == [100 + i for i in range(64) if i not in (5, 40)]  # in order, none twice
    assert len(calls) < 64  # bisection, not one call per record


def test_a_native_panic_is_isolated_like_an_exception() -> None:
    values = [b'{"ok":1}', b'{"panic":1}', b'{"ok":2}']
    _, decode = _rows_decoder({b"panic": PanicException("index out of bounds: the len is 3 but the index is 7")})
    results = decode_isolating(decode, MessageBatch.of(_messages(values)))
    (failure,) = [f for r in results for f in r.failures]
    assert (failure.message.offset(), failure.reason, failure.error_class) == (101, "decoder_error", "PanicException")
    assert "index out of bounds" in failure.detail
    assert _landed(results) == [100, 102]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), TransientError("registry down")])
def test_interrupts_exits_and_transient_errors_are_never_swallowed(exc: BaseException) -> None:
    _, decode = _rows_decoder({b"x": exc})
    with pytest.raises(type(exc)):
        decode_isolating(decode, MessageBatch.of(_messages([b'{"a":1}', b'{"x":1}'])))


def test_only_pyo3_panics_pass_for_panics() -> None:
    assert is_native_panic(PanicException("boom"))
    assert not is_native_panic(KeyboardInterrupt())
    assert not is_native_panic(type("PanicException", (BaseException,), {})())


def test_rows_that_cannot_be_written_are_found_among_good_ones() -> None:
    rows = pa.table({"_kafka_offset": list(range(1000, 1100)), "year": [2026] * 100})
    years = rows.column("year").to_pylist()
    years[17] = 33_658
    years[99] = 33_658
    rows = rows.set_column(1, "year", pa.array(years))

    def write(part: pa.Table) -> None:
        if 33_658 in part.column("year").to_pylist():
            raise ValueError("year 33658 is out of range")

    failing = failing_rows(write, rows)
    assert [index for index, _ in failing] == [17, 99]
    assert all(isinstance(exc, ValueError) for _, exc in failing)
    assert failing_rows(write, rows.slice(0, 10)) == []


# --- the crash-loop guard -----------------------------------------------------------------------------


def test_a_note_outlives_a_killed_writer_and_only_a_dead_writers_note_is_taken(tmp_path: Path) -> None:
    live = InflightNote(tmp_path)
    live.note([(TOPIC, 1, 10, 20)])
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from services.consumer.quarantine import InflightNote
        note = InflightNote(Path({str(tmp_path)!r}))
        note.note([({TOPIC!r}, 3, 500, 742), ("other", 0, 7, 7)])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    dying = subprocess.run([sys.executable, "-c", script], cwd=repo_root(), check=False)
    assert dying.returncode == -signal.SIGKILL
    cleared = InflightNote(tmp_path)  # a clean writer's note is empty once its batch is decoded
    cleared.note([(TOPIC, 4, 1, 2)])
    cleared.clear()

    (dead,) = dead_notes(tmp_path)
    assert dead.ranges == [(TOPIC, 3, 500, 742), ("other", 0, 7, 7)]
    assert dead_notes(tmp_path) == []  # held by this process until done
    dead.done()
    assert not dead.path.exists()
    assert live.path.exists()
    live.close()
    cleared.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_quarantined_records_are_remembered_and_left_out_of_decoding(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path)
    batch = MessageBatch.of(_messages([b"a", b"b", b"c", b"d"], first_offset=10))
    assert quarantine.without_quarantined(TOPIC, batch) is batch
    quarantine.add([(TOPIC, 2, 11), (TOPIC, 2, 13), (TOPIC, 5, 12)])

    again = Quarantine(tmp_path)  # another start, or another writer of the group on this host
    assert (TOPIC, 2, 11) in again
    assert len(again) == 3
    kept = again.without_quarantined(TOPIC, batch)
    assert kept.offsets.tolist() == [10, 12]
    assert [kept.message(i).value() for i in range(len(kept))] == [b"a", b"c"]
    assert again.without_quarantined("another.topic", batch) is batch


def test_the_record_that_kills_the_decoding_process_is_found_in_a_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test hook kills whichever process decodes the marked value: here, the isolated children only."""
    marker = "kill-me-" + os.urandom(4).hex()
    monkeypatch.setenv(CRASH_MARKER_ENV, marker)  # read at import by the spawned children, not by this process
    settings = load_settings({"CDCFLOW_LAKE__ROOT": str(tmp_path / "lake")})
    values = [json.dumps({"op": "c", "n": i}).encode() for i in range(6)]
    values[3] = json.dumps({"op": "c", "note": marker}).encode()
    messages = _messages(values)

    others = [Message(topic="cdcflow.lending.customers", partition=0, offset=7, value=b'{"op":"c"}', timestamp=(1, 1))]

    (crasher,) = find_crashers(settings, {"cdcflow.lending.customers": others, TOPIC: messages}, timeout_s=30)
    message, death = crasher
    assert (message.topic(), message.offset(), message.value()) == (TOPIC, 103, values[3])
    assert "SIGSEGV" in death
    assert find_crashers(settings, {TOPIC: messages[:3] + messages[4:]}, timeout_s=30) == []


def test_a_decode_that_hangs_holding_the_gil_is_ended_by_the_watchdog() -> None:
    script = textwrap.dedent(
        """
        from services.consumer.quarantine import DecodeWatchdog
        watchdog = DecodeWatchdog(0.5)
        assert watchdog.armed
        with watchdog.watching():
            sum(range(10**12))  # one C loop that never releases the GIL nor runs a signal handler
        """
    )
    hung = subprocess.run([sys.executable, "-c", script], cwd=repo_root(), check=False, timeout=60)
    assert hung.returncode == -signal.SIGALRM


def test_a_watched_decode_that_finishes_is_not_ended() -> None:
    script = "from services.consumer.quarantine import DecodeWatchdog\nw = DecodeWatchdog(0.5)\n"
    script += "with w.watching():\n    pass\nimport time\ntime.sleep(1)\n"
    assert subprocess.run([sys.executable, "-c", script], cwd=repo_root(), check=False).returncode == 0


def test_a_catalog_out_of_reach_is_transient_and_never_remembered_as_a_refusal(tmp_path: Path) -> None:
    """PostgreSQL unreachable (nothing listens on the port): each lookup fails fast with a transient error, so
    the writer retries the partition instead of dead-lettering its records; an outage is not cached as "no"."""
    lake = open_lake(LakeSettings(), str(tmp_path / "lake"))
    evolution = CatalogEvolution(
        "postgresql://cdcflow:secret@127.0.0.1:9/lending", lake, WriterMetrics(new_registry()), timeout_s=2
    )
    for _ in range(2):
        began = time.monotonic()
        with pytest.raises(CatalogUnavailableError):
            evolution.discover("lending", "brand_new")
        assert time.monotonic() - began < 3
    assert isinstance(CatalogUnavailableError("x"), TransientError)
    lake.close()


def test_catalog_connections_are_bounded_in_time() -> None:
    dsn = bounded_dsn("postgresql://cdcflow:secret@db.example:5432/lending", 5)
    assert "connect_timeout=5" in dsn
    assert "statement_timeout=5000" in dsn


def test_a_catalog_out_of_reach_is_our_transient_error_not_the_drivers() -> None:
    with pytest.raises(CatalogUnreachableError, match="out of reach") as raised:
        contracts_from_catalog("postgresql://cdcflow:secret@127.0.0.1:9/lending", [r"lending\..*"], timeout_s=2)
    assert isinstance(raised.value, TransientError)
