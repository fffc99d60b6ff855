"""Against the real stack: the writer's defaults fail loudly where they used to fail silently.

- A committed offset that retention has overtaken (records deleted before this group wrote them) stops the
  writer with a named error and exit code 2; it never jumps to the log start and commits past the gap.
- A start check the broker did not answer at assignment is made before the partition's first record.
- SIGTERM has a deadline: a writer stuck past ``grace_s`` says what it held and exits non-zero.
"""

from __future__ import annotations

import json
import signal
import uuid

import pytest

from services.common.kafka import Message, TopicPartition, admin_client, consumer, ensure_topics, producer
from services.common.settings import Settings
from services.common.signals import OVERDUE_EXIT
from services.consumer.app import OFFSETS_OUT_OF_RANGE_EXIT
from services.consumer.continuity import Continuity
from services.consumer.errors import OffsetsOutOfRangeError, StartUncheckedError
from services.consumer.faults import HANG_MARKER_ENV
from services.stack.runtime import Stack
from tests.fixtures.faulty_writer import FAULT_RATE_ENV
from tests.fixtures.net import LOOPBACK, TcpProxy, free_port
from tests.fixtures.pipeline import (
    FaultyWriterProcess,
    WriterProcess,
    committed_offsets,
    real_events,
    wait_for_log_event,
    wait_until,
)

RECORDS = 20
COMMITTED = 5
LOG_START = 12


def _real_events(settings: Settings, count: int) -> list[Message]:
    return real_events(settings, "transactions", count)[:count]


def _produce(settings: Settings, topic: str, values: list[bytes | None], partition: int = 0) -> None:
    client = producer(settings.kafka, **{"linger.ms": 5})
    for value in values:
        client.produce(topic, key=b"k", value=value, partition=partition)
    assert client.flush(30) == 0


def _log_events(writer: WriterProcess, event: str) -> list[dict[str, object]]:
    found = []
    for line in writer.logs().splitlines():
        if f'"event": "{event}"' in line:
            found.append(json.loads(line))
    return found


def test_a_committed_offset_retention_has_overtaken_stops_the_writer_with_a_named_error(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    prefix = f"retention{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    _produce(settings, topic, [m.value() for m in _real_events(settings, RECORDS)])
    # the group wrote 0..4 before it went down; retention then deleted 0..11
    group_client = consumer(settings.kafka, writer.group)
    try:
        group_client.commit(offsets=[TopicPartition(topic, 0, COMMITTED)], asynchronous=False)
    finally:
        group_client.close()
    admin = admin_client(settings.kafka)
    for future in admin.delete_records([TopicPartition(topic, 0, LOG_START)]).values():
        future.result(timeout=30)

    writer.env_overrides["CDCFLOW_KAFKA__TOPIC_PREFIX"] = prefix
    proc = writer.start()
    assert proc.wait(timeout=120) == OFFSETS_OUT_OF_RANGE_EXIT, writer.logs()[-3000:]

    (lost,) = _log_events(writer, "writer.offsets_out_of_range")
    assert (lost["topic"], lost["partition"], lost["committed"], lost["log_start"]) == (topic, 0, COMMITTED, LOG_START)
    assert lost["unrecoverable_records"] == LOG_START - COMMITTED
    assert f"--group {writer.group} --topic {topic}:0 --reset-offsets" in str(lost["action"])
    assert committed_offsets(settings, writer.group, [(topic, 0)]) == {(topic, 0): COMMITTED}  # nothing skipped
    assert not list(writer.lake_root.rglob("*.parquet"))


def test_retention_overtaking_a_partition_the_writer_is_retrying_stops_it_with_the_named_error(
    stack: Stack, settings: Settings, faulty_writer: FaultyWriterProcess
) -> None:
    """Every lake write fails, so the writer keeps seeking partition 0 back to offset 0; retention then deletes
    0..11 and librdkafka, reading again, jumps to 12. The writer notices instead of writing 12.. and committing."""
    prefix = f"behind{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    _produce(settings, topic, [m.value() for m in _real_events(settings, RECORDS)])
    faulty_writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
            FAULT_RATE_ENV: "0.999",
            "CDCFLOW_WRITER__RETRY_BACKOFF_S": "0.5",
            "CDCFLOW_WRITER__RETRY_BACKOFF_MAX_S": "1",
        }
    )
    proc = faulty_writer.start()
    wait_for_log_event(faulty_writer, proc, "writer.retry_later", timeout_s=120)
    admin = admin_client(settings.kafka)
    for future in admin.delete_records([TopicPartition(topic, 0, LOG_START)]).values():
        future.result(timeout=30)
    assert proc.wait(timeout=120) == OFFSETS_OUT_OF_RANGE_EXIT, faulty_writer.logs()[-3000:]
    (lost,) = _log_events(faulty_writer, "writer.offsets_out_of_range")
    assert (lost["topic"], lost["partition"], lost["committed"], lost["log_start"]) == (topic, 0, 0, LOG_START)
    assert committed_offsets(settings, faulty_writer.group, [(topic, 0)])[(topic, 0)] < 0  # nothing committed past it


def test_a_new_group_still_starts_at_the_beginning_of_every_partition(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    prefix = f"newgroup{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    events = _real_events(settings, RECORDS)
    _produce(settings, topic, [m.value() for m in events[:10]], partition=0)
    _produce(settings, topic, [m.value() for m in events[10:]], partition=1)
    writer.env_overrides["CDCFLOW_KAFKA__TOPIC_PREFIX"] = prefix
    proc = writer.start()

    def committed_all() -> bool:
        return committed_offsets(settings, writer.group, [(topic, 0), (topic, 1)]) == {(topic, 0): 10, (topic, 1): 10}

    wait_until("the new group to commit both partitions from offset 0", committed_all, timeout_s=120)
    assert writer.terminate(proc) == 0


def test_sigterm_has_a_deadline_when_the_writer_is_stuck(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    prefix = f"grace{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    marker = f"hang-{uuid.uuid4().hex}"
    _produce(settings, topic, [b'{"payload": "' + marker.encode() + b'"}'])
    writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
            HANG_MARKER_ENV: marker,  # decoding that record never ends: the loop cannot get back to its flag
            "CDCFLOW_WRITER__DECODE_TIMEOUT_S": "0",
            "CDCFLOW_WRITER__GRACE_S": "2",
        }
    )
    proc = writer.start()
    wait_for_log_event(writer, proc, "writer.assigned")
    notes = writer.lake_root.parent / "writer-state" / writer.group
    # the crash-loop guard's note holds the offsets being decoded: not empty, the writer is in the hung decode
    wait_until("the writer stuck decoding", lambda: any(n.stat().st_size for n in notes.glob("inflight-*.note")), 60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == OVERDUE_EXIT
    assert _log_events(writer, "writer.shutdown_overdue")
    (overdue,) = _log_events(writer, "shutdown.overdue")
    assert overdue["grace_s"] == 2


def test_a_start_check_the_broker_left_unanswered_is_made_before_the_partitions_first_record(
    stack: Stack, settings: Settings
) -> None:
    """The broker does not answer the start check at assignment: the partition stays unchecked, its records
    wait while the broker still does not answer, and once it does, a committed offset retention overtook is
    named, as it is at assignment, instead of being jumped over unseen."""
    prefix = f"unanswered{uuid.uuid4().hex[:8]}"
    topic, group = f"{prefix}.lending.transactions", f"{prefix}-writer"
    ensure_topics(settings.kafka, [topic])
    _produce(settings, topic, [m.value() for m in _real_events(settings, RECORDS)])
    group_client = consumer(settings.kafka, group)
    try:
        group_client.commit(offsets=[TopicPartition(topic, 0, COMMITTED)], asynchronous=False)
    finally:
        group_client.close()
    admin = admin_client(settings.kafka)  # held while its futures run
    for future in admin.delete_records([TopicPartition(topic, 0, LOG_START)]).values():
        future.result(timeout=30)

    broker = TcpProxy(settings.kafka.first_broker(), port=free_port())  # not started: nothing answers there
    through = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"bootstrap_servers": f"{LOOPBACK}:{broker.port}"}),
            "writer": settings.writer.model_copy(update={"group_id": group}),
        }
    )
    continuity = Continuity(through, lambda tp: (LOG_START, RECORDS))
    tp = (topic, 0)
    continuity.check_assigned([tp])
    continuity.check_next(tp, LOG_START)  # the first record after librdkafka's reset: nothing known to compare
    with pytest.raises(StartUncheckedError):
        continuity.check_starts([tp])
    broker.start()
    try:
        with pytest.raises(OffsetsOutOfRangeError) as caught:
            continuity.check_starts([tp])
    finally:
        broker.stop()
    assert caught.value.lost == [(topic, 0, COMMITTED, LOG_START, RECORDS)]


def test_a_partition_handed_back_while_the_broker_leaves_its_check_unanswered_waits_for_the_check(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    """The writer runs; then the broker stops answering new clients (the start check opens one), and a member
    that joins the group and leaves it hands partitions back to the writer, unchecked. Records that arrive in one
    of them wait, unwritten, instead of being read on from wherever the consumer stands; retention meanwhile
    overtakes the committed offset (the consumer, reset to the new log start, then finds nothing to read), and
    once the broker answers the writer names the loss and stops, with no record to prompt it."""
    prefix = f"handedback{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    events = [m.value() for m in _real_events(settings, LOG_START)]
    for partition in range(settings.kafka.topic_partitions):
        _produce(settings, topic, events[:COMMITTED], partition)
    broker = TcpProxy(settings.kafka.first_broker(), port=free_port())
    broker.start()
    writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
            "CDCFLOW_KAFKA__BOOTSTRAP_SERVERS": f"{LOOPBACK}:{broker.port}",
            "CDCFLOW_WRITER__RETRY_BACKOFF_MAX_S": "2",
        }
    )
    proc = writer.start()
    try:
        everything = [(topic, p) for p in range(settings.kafka.topic_partitions)]
        wait_until(
            "the writer to commit every partition",
            lambda: set(committed_offsets(settings, writer.group, everything).values()) == {COMMITTED},
        )
        broker.stop()  # the writer's consumer is connected to the broker itself; a new client cannot reach it

        member = consumer(settings.kafka, writer.group)
        try:
            member.subscribe([topic])
            wait_until(
                "a member to take partitions",
                lambda: bool(member.consume(timeout=0.5) == [] and member.assignment()),
                60,
            )
            handed_back = member.assignment()[0].partition
        finally:
            member.close()  # its partitions go back to the writer
        wait_for_log_event(writer, proc, "writer.start_check_failed", timeout_s=60)
        _produce(settings, topic, events[COMMITTED:], handed_back)
        wait_for_log_event(writer, proc, "writer.retry_later", timeout_s=60)
        admin = admin_client(settings.kafka)
        for future in admin.delete_records([TopicPartition(topic, handed_back, LOG_START)]).values():
            future.result(timeout=30)
        assert not list(writer.lake_root.rglob(f"p{handed_back}-{COMMITTED:020d}.parquet"))  # nothing read on

        broker.start()
        assert proc.wait(timeout=120) == OFFSETS_OUT_OF_RANGE_EXIT, writer.logs()[-3000:]
    finally:
        broker.stop()
    (lost,) = _log_events(writer, "writer.offsets_out_of_range")
    assert (lost["topic"], lost["partition"], lost["committed"], lost["log_start"]) == (
        topic,
        handed_back,
        COMMITTED,
        LOG_START,
    )
    assert committed_offsets(settings, writer.group, [(topic, handed_back)]) == {(topic, handed_back): COMMITTED}
    assert not list(writer.lake_root.rglob(f"p{handed_back}-{COMMITTED:020d}.parquet"))
