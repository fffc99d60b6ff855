"""Against the real stack: every bad record is in the DLQ exactly once, counted by its original coordinates.

Two ways a record used to be published twice: a batch read again after a transient lake failure while the
record's first send was still unacknowledged, and a writer killed between the DLQ send at ingest and the
commit at flush (its successor reads the batch again). Both are staged here; the DLQ must hold each bad
record once and the writer must count it once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from services.common.kafka import MAX_RECORD_BYTES, Message, admin_client, ensure_topics, producer
from services.common.settings import Settings
from services.consumer.dlq import DlqPublisher, dlq_topic
from services.stack.runtime import Stack
from tests.fixtures.faulty_writer import FAULT_RATE_ENV, FAULT_SEED_ENV
from tests.fixtures.pipeline import (
    Coordinate,
    FaultyWriterProcess,
    WriterProcess,
    committed_offsets,
    dlq_coordinate,
    dlq_messages,
    partition_ends,
    real_events,
    wait_until,
    wait_until_committed,
)

REAL_EVENTS = 120
PARTITIONS_USED = 3
BAD_EVERY = 6  # one bad record after every sixth good one: good and bad share every poll batch


def _real_events(settings: Settings) -> list[Message]:
    return real_events(settings, "transactions", 1, per_partition=REAL_EVENTS)


def _produce_mixed(settings: Settings, topic: str) -> set[Coordinate]:
    """Real events with bad records among them, on a few partitions; the bad records' coordinates."""
    client = producer(settings.kafka, **{"linger.ms": 5})
    bad: set[Coordinate] = set()
    errors: list[str] = []

    def delivered(error: object, message: Message) -> None:
        if error is not None:
            errors.append(str(error))
        else:
            bad.add((topic, int(message.partition() or 0), int(message.offset() or 0)))

    for index, event in enumerate(_real_events(settings)):
        partition = index % PARTITIONS_USED
        client.produce(topic, key=event.key(), value=event.value(), headers=event.headers(), partition=partition)
        if index % BAD_EVERY == 0:
            value = f'{{"payload": not json {index}'.encode()
            client.produce(topic, key=b"bad", value=value, partition=partition, on_delivery=delivered)
    assert client.flush(30) == 0
    assert errors == []
    return bad


def _dlq_counts(settings: Settings, group: str) -> Counter[Coordinate]:
    return Counter(dlq_coordinate(m) for m in dlq_messages(settings, group))


def _dlq_so_far(settings: Settings, group: str) -> set[Coordinate]:
    """What the DLQ holds now; nothing before the writer has created it."""
    try:
        return set(_dlq_counts(settings, group))
    except KeyError:
        return set()


def _assert_once(settings: Settings, writer: WriterProcess, bad: set[Coordinate]) -> None:
    counts = _dlq_counts(settings, writer.group)
    twice = {c: n for c, n in counts.items() if n > 1}
    assert twice == {}, f"{len(twice)} bad records are in the DLQ more than once: {sorted(twice.items())[:5]}"
    assert set(counts) == bad
    assert writer.logs().count('"event": "writer.dead_lettered"') == len(bad)  # counted once too


def test_transient_lake_faults_do_not_publish_a_dlq_record_twice(
    stack: Stack, settings: Settings, faulty_writer: FaultyWriterProcess
) -> None:
    prefix = f"dlqonce{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    bad = _produce_mixed(settings, topic)
    faulty_writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
            FAULT_RATE_ENV: "0.5",
            FAULT_SEED_ENV: "11",
            "CDCFLOW_WRITER__POLL_BATCH": "20",
            "CDCFLOW_WRITER__FLUSH_MAX_ROWS": "10",
            "CDCFLOW_WRITER__RETRY_BACKOFF_S": "0.05",
            "CDCFLOW_WRITER__RETRY_BACKOFF_MAX_S": "0.2",
        }
    )
    proc = faulty_writer.start()
    wait_until_committed(settings, faulty_writer.group, partition_ends(settings, [topic]), timeout_s=180)
    assert proc.poll() is None, faulty_writer.logs()[-3000:]
    assert faulty_writer.logs().count('"event": "writer.retry_later"') > 0, (
        "no fault was injected: the test proves nothing"
    )
    _assert_once(settings, faulty_writer, bad)
    assert faulty_writer.terminate(proc) == 0


def test_a_writer_killed_between_the_dlq_send_and_the_commit_does_not_publish_twice(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    prefix = f"dlqkill{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    bad = _produce_mixed(settings, topic)
    writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
            "CDCFLOW_KAFKA__EXTRA__SESSION_TIMEOUT_MS": "6000",
            # nothing is flushed, so nothing is committed, while the first writer runs
            "CDCFLOW_WRITER__FLUSH_MAX_AGE_S": "600",
        }
    )
    first = writer.start()
    wait_until("every bad record in the DLQ", lambda: _dlq_so_far(settings, writer.group) == bad, timeout_s=120)
    partitions = [(topic, p) for p in range(PARTITIONS_USED)]
    assert all(offset < 0 for offset in committed_offsets(settings, writer.group, partitions).values())
    writer.kill(first)

    writer.env_overrides["CDCFLOW_WRITER__FLUSH_MAX_AGE_S"] = "1"
    second = writer.start()
    time.sleep(1)
    wait_until_committed(settings, writer.group, partition_ends(settings, [topic]), timeout_s=180)
    assert second.poll() is None, writer.logs()[-3000:]
    counts = _dlq_counts(settings, writer.group)
    twice = {c: n for c, n in counts.items() if n > 1}
    assert twice == {}, f"{len(twice)} bad records are in the DLQ more than once: {sorted(twice.items())[:5]}"
    assert set(counts) == bad
    assert _dlq_list(writer.group) == {"records": len(bad), "pending": len(bad), "dlq_records": sum(counts.values())}
    assert writer.terminate(second) == 0


def _dlq_list(group: str) -> dict[str, int]:
    """What ``cdcflow dlq list`` counts for the group: each failed coordinate once."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cdcflow"), "dlq", "list", "--group", group, "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    (found,) = json.loads(done.stdout)["groups"]
    return {key: found[key] for key in ("records", "pending", "dlq_records")}


def test_an_existing_dlq_topic_gets_the_size_limit_the_writer_needs(stack: Stack, settings: Settings) -> None:
    """A DLQ topic made earlier with the broker's default limit (1 MB) would force large records to lose
    their value; the publisher raises the topic's limit instead."""
    group = f"dlqlimit{uuid.uuid4().hex[:8]}"
    topic = dlq_topic(group)
    ensure_topics(settings.kafka, [topic], config={"max.message.bytes": "100000"})
    assert _max_message_bytes(settings, topic) == 100_000
    publisher = DlqPublisher(settings.kafka, group, "worker-1")
    try:
        assert _max_message_bytes(settings, topic) >= MAX_RECORD_BYTES
    finally:
        publisher.close()


def _max_message_bytes(settings: Settings, topic: str) -> int:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = admin_client(settings.kafka)  # kept alive until the answer is in
    (future,) = admin.describe_configs([resource]).values()
    return int(future.result(timeout=30)["max.message.bytes"].value)
