"""Against the real stack: a record that kills the decoding process costs that record, not the pipeline.

The test hook ``CDCFLOW_TEST_DECODE_CRASH_MARKER`` (services/consumer/faults.py, not a setting) makes whichever
process decodes a value holding the marker die by SIGSEGV, as a native decoder crash would; with
``CDCFLOW_TEST_DECODE_HANG_MARKER`` it hangs instead, and the decode watchdog ends it with SIGALRM. During a small
workload one marked record goes into a captured topic: the writer dies; restarted once, it finds the record
by decoding the offsets it had in hand record by record in an isolated child, sends exactly that record to the
DLQ (``decoder_crash``, original bytes and headers) and goes on. Every offset ends up in the lake, the DLQ or
as a tombstone, none twice.

The test owns its topics (a topic prefix of its own, filled with copies of real change events), so the marked
record reaches no other consumer of the shared stack.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.debezium.records import Reason
from services.common.kafka import Message, ensure_topics, producer
from services.common.settings import Settings
from services.consumer.faults import CRASH_MARKER_ENV, ERROR_MARKER_ENV, HANG_MARKER_ENV, WRITE_FAILURE_MARKER_ENV
from services.stack.runtime import Stack
from tests.fixtures.pipeline import (
    WriterProcess,
    audit_offsets,
    dlq_coordinate,
    dlq_messages,
    header_dict,
    partition_ends,
    real_events,
    wait_for_log_event,
    wait_until,
    wait_until_committed,
    writer_log,
)

TABLES = ("customers", "facilities", "transactions")
REAL_PER_TABLE = 60
RATE_PER_S = 60.0
WORKLOAD_S = 12.0
MARK_AFTER_S = 4.0
SESSION_TIMEOUT_MS = "6000"  # a killed member holds its partitions until its session expires
DECODE_TIMEOUT_S = 5  # a hang is found in seconds, and no real decode of this workload comes near it


def _real_events(settings: Settings, table: str) -> list[Message]:
    """Change events (and tombstones) of ``table`` from the shared stack's topic, to copy into ours."""
    return real_events(settings, table, 1, per_partition=REAL_PER_TABLE, tombstones=True)


def _marked(event: Message, marker: str) -> bytes | None:
    """A real transactions event with an after image, still valid, with the marker in its ``reference``."""
    if event.value() is None:
        return None
    document = json.loads(event.value() or b"")
    payload = document.get("payload", document)
    if not isinstance(payload.get("after"), dict):
        return None
    payload["after"]["reference"] = marker
    return json.dumps(document, separators=(",", ":")).encode()


class Copier(threading.Thread):
    """A small workload on our topics: real events copied at a steady rate, then the marked one, then more."""

    def __init__(self, settings: Settings, events: dict[str, list[Message]], topics: dict[str, str], marker: str):
        super().__init__(name="copier", daemon=True)
        self._settings = settings
        self._events = events
        self._topics = topics
        self._marker = marker
        self.marked: tuple[str, int, int] | None = None
        self.marked_value = b""
        self.marked_headers: list[tuple[str, str | bytes | None]] = [
            ("quarantine.kind", b"marked"),
            ("quarantine.raw", b"\x00\xff"),
        ]
        self.marked_timestamp_ms = 0
        self.produced = 0
        self.error: BaseException | None = None

    def _sequence(self) -> Iterator[tuple[str, Message]]:
        index = 0
        while True:
            for table in TABLES:
                events = self._events[table]
                yield table, events[index % len(events)]
            index += 1

    def run(self) -> None:
        try:
            self._copy()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def _copy(self) -> None:
        client = producer(self._settings.kafka, **{"linger.ms": 5})
        errors: list[str] = []

        def delivered(error: object, message: Message) -> None:
            if error is not None:
                errors.append(str(error))
            elif message.value() == self.marked_value:
                self.marked = (str(message.topic()), int(message.partition() or 0), int(message.offset() or 0))

        began = time.monotonic()
        for table, event in self._sequence():
            elapsed = time.monotonic() - began
            if elapsed > WORKLOAD_S:
                break
            marked = _marked(event, self._marker) if table == "transactions" else None
            if self.marked_value == b"" and elapsed > MARK_AFTER_S and marked is not None:
                self.marked_value = marked
                self.marked_timestamp_ms = time.time_ns() // 1_000_000
                client.produce(
                    self._topics[table],
                    key=event.key(),
                    value=self.marked_value,
                    headers=self.marked_headers,
                    timestamp=self.marked_timestamp_ms,
                    on_delivery=delivered,
                )
            client.produce(
                self._topics[table],
                key=event.key(),
                value=event.value(),
                headers=event.headers(),
                on_delivery=delivered,
            )
            self.produced += 1
            client.poll(0)
            time.sleep(1 / RATE_PER_S)
        assert client.flush(30) == 0, "records still undelivered after 30 s"
        assert errors == [], errors


@pytest.mark.parametrize(
    "hook_and_death",
    [
        pytest.param((CRASH_MARKER_ENV, signal.SIGSEGV), id="native-crash"),
        pytest.param((HANG_MARKER_ENV, signal.SIGALRM), id="hang"),  # ended by the decode watchdog
    ],
)
def test_a_record_that_kills_the_decoder_is_quarantined_after_one_restart(
    stack: Stack, settings: Settings, writer: WriterProcess, tmp_path: Path, hook_and_death: tuple[str, signal.Signals]
) -> None:
    hook, death = hook_and_death
    prefix = f"quarantine{uuid.uuid4().hex[:8]}"
    topics = {table: f"{prefix}.lending.{table}" for table in TABLES}
    ensure_topics(settings.kafka, sorted(topics.values()))  # before the writer subscribes to the pattern
    events = {table: _real_events(settings, table) for table in TABLES}
    marker = f"crash-here-{uuid.uuid4().hex}"
    state_dir = tmp_path / "writer-state"
    writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
            "CDCFLOW_WRITER__STATE_DIR": str(state_dir),
            "CDCFLOW_KAFKA__EXTRA__SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS,
            "CDCFLOW_WRITER__DECODE_TIMEOUT_S": str(DECODE_TIMEOUT_S),
            hook: marker,
        }
    )

    first = writer.start()
    wait_for_log_event(writer, first, "writer.assigned")
    copier = Copier(settings, events, topics, marker)
    copier.start()

    # the marked record kills the writer where it decodes it, like a segfault in a native decoder
    wait_until("the writer to die on the marked record", lambda: first.poll() is not None, timeout_s=90)
    assert first.returncode == -death, writer_log(writer, first)[-3000:]
    (note,) = state_dir.glob("*/inflight-*.note")
    assert note.read_bytes(), "the dead writer left no note of the offsets it was decoding"

    # restarted once: it quarantines that record and goes on
    second = writer.start()
    wait_for_log_event(writer, second, "writer.assigned", timeout_s=180)
    copier.join(timeout=WORKLOAD_S + 60)
    assert not copier.is_alive(), "the copier did not finish"
    assert copier.error is None, f"the copier failed: {copier.error!r}"
    assert copier.marked is not None
    ends = partition_ends(settings, sorted(topics.values()))
    assert sum(ends.values()) == copier.produced + 1
    wait_until_committed(settings, writer.group, ends, timeout_s=180)
    assert second.poll() is None, f"the restarted writer stopped (exit {second.returncode}):\n{writer.logs()[-3000:]}"

    # exactly that record is in the DLQ, once, as it was produced, with why
    dlq = dlq_messages(settings, writer.group)
    assert [dlq_coordinate(m) for m in dlq] == [copier.marked], [header_dict(m) for m in dlq]
    (dead,) = dlq
    assert dead.value() == copier.marked_value
    assert list(dead.headers() or [])[: len(copier.marked_headers)] == copier.marked_headers
    error = header_dict(dead)
    assert error["cdcflow.source.timestamp"] == str(copier.marked_timestamp_ms).encode()
    assert dead.timestamp()[1] > copier.marked_timestamp_ms  # the DLQ's retention counts from the dead-lettering
    assert error["cdcflow.error.reason"] == Reason.DECODER_CRASH.encode()
    assert error["cdcflow.error.class"] == b"DecoderCrash"
    assert death.name.encode() in (error["cdcflow.error.message"] or b"")

    # the audit: every offset in the lake, the DLQ or a tombstone; none twice anywhere
    audit = audit_offsets(settings, writer.group, writer.lake_root, prefix, ends)
    print(f"\n[writer quarantine] produced={copier.produced + 1} {audit.summary()}")
    assert audit.missing == [], audit.missing[:20]
    assert audit.duplicates == 0
    assert audit.dlq_duplicates == 0
    assert audit.dead_lettered == 1
    assert audit.in_lake > 0

    assert writer.terminate(second, timeout_s=settings.writer.grace_s) == 0
    logs = writer_log(writer, second)
    assert logs.count('"event": "writer.crashed_while_decoding"') == 1
    group_state = state_dir / writer.group
    quarantined = [json.loads(line) for line in (group_state / "quarantined.jsonl").read_text().splitlines()]
    assert [(q["topic"], q["partition"], q["offset"]) for q in quarantined] == [copier.marked]
    assert sorted(p.name for p in group_state.iterdir()) == ["quarantined.jsonl"]  # no note left behind


def test_a_row_the_lake_cannot_take_goes_to_the_dlq_and_the_rest_is_written(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    """``CDCFLOW_TEST_WRITE_FAILURE_MARKER`` makes writing the row that holds it raise ``ValueError`` (a defect,
    not a transient error): its record is read again from Kafka and DLQ'd, its partition's other rows land."""
    prefix = f"unwritable{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    events = _real_events(settings, "transactions")
    marker = f"cannot-write-{uuid.uuid4().hex}"
    marked_value = next(v for v in (_marked(e, marker) for e in events) if v is not None)
    headers: list[tuple[str, str | bytes | None]] = [("unwritable.kind", b"marked")]
    client = producer(settings.kafka, **{"linger.ms": 5})
    offsets: list[int] = []
    for index, event in enumerate(events):
        client.produce(topic, key=event.key(), value=event.value(), headers=event.headers(), partition=0)
        if index == len(events) // 2:
            client.produce(
                topic,
                key=b'{"marked":1}',
                value=marked_value,
                headers=headers,
                partition=0,
                on_delivery=lambda _e, m: offsets.append(int(m.offset() or 0)),
            )
    assert client.flush(30) == 0
    (marked_offset,) = offsets

    writer.env_overrides.update({"CDCFLOW_KAFKA__TOPIC_PREFIX": prefix, WRITE_FAILURE_MARKER_ENV: marker})
    proc = writer.start()
    ends = partition_ends(settings, [topic])
    wait_until_committed(settings, writer.group, ends, timeout_s=120)
    assert proc.poll() is None, f"the writer stopped (exit {proc.returncode}):\n{writer.logs()[-3000:]}"

    (dead,) = dlq_messages(settings, writer.group)
    assert dlq_coordinate(dead) == (topic, 0, marked_offset)
    assert dead.value() == marked_value
    assert dead.key() == b'{"marked":1}'
    assert list(dead.headers() or [])[:1] == headers
    error = header_dict(dead)
    assert error["cdcflow.error.reason"] == Reason.DECODER_ERROR.encode()
    assert error["cdcflow.error.stage"] == b"write"
    assert error["cdcflow.error.class"] == b"ValueError"
    assert marker.encode() in (error["cdcflow.error.message"] or b"")

    audit = audit_offsets(settings, writer.group, writer.lake_root, prefix, ends)
    print(f"\n[writer unwritable] {audit.summary()}")
    assert audit.missing == []
    assert audit.duplicates == 0
    assert audit.dead_lettered == 1
    assert audit.in_lake > 0
    assert writer.terminate(proc, timeout_s=settings.writer.grace_s) == 0


def test_a_decoder_defect_costs_only_its_records_and_the_rest_lands(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    """``CDCFLOW_TEST_DECODE_ERROR_MARKER`` makes decoding any batch holding the marker raise ``RuntimeError``:
    the writer bisects each batch down to the marked records, DLQs them (``decoder_error``) and lands the rest."""
    prefix = f"defect{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    events = _real_events(settings, "transactions")
    marker = f"defect-{uuid.uuid4().hex}"
    marked = [v for v in (_marked(e, marker) for e in events) if v is not None][:3]
    assert len(marked) == 3
    client = producer(settings.kafka, **{"linger.ms": 5})
    coordinates: list[tuple[str, int, int]] = []

    def delivered(_error: object, message: Message) -> None:
        coordinates.append((str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)))

    for index, event in enumerate(events):
        client.produce(topic, key=event.key(), value=event.value(), headers=event.headers(), partition=index % 3)
        if index % 40 == 7 and marked:  # spread over partitions and batches, between good records
            client.produce(topic, key=b"{}", value=marked.pop(), partition=index % 3, on_delivery=delivered)
    assert client.flush(30) == 0
    assert len(coordinates) == 3

    writer.env_overrides.update({"CDCFLOW_KAFKA__TOPIC_PREFIX": prefix, ERROR_MARKER_ENV: marker})
    proc = writer.start()
    ends = partition_ends(settings, [topic])
    wait_until_committed(settings, writer.group, ends, timeout_s=120)
    assert proc.poll() is None, f"the writer stopped (exit {proc.returncode}):\n{writer.logs()[-3000:]}"

    dlq = dlq_messages(settings, writer.group)
    assert sorted(dlq_coordinate(m) for m in dlq) == sorted(coordinates)
    for dead in dlq:
        error = header_dict(dead)
        assert error["cdcflow.error.reason"] == Reason.DECODER_ERROR.encode()
        assert error["cdcflow.error.class"] == b"RuntimeError"
        assert b"injected decoder defect" in (error["cdcflow.error.message"] or b"")
        assert marker.encode() in (dead.value() or b"")

    audit = audit_offsets(settings, writer.group, writer.lake_root, prefix, ends)
    print(f"\n[writer defect] {audit.summary()}")
    assert audit.missing == []
    assert audit.duplicates == 0
    assert audit.dlq_duplicates == 0
    assert audit.dead_lettered == 3
    assert audit.in_lake > 0
    assert writer.terminate(proc, timeout_s=settings.writer.grace_s) == 0
