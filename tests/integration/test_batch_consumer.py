"""Against the real broker: the native batch consumer delivers, commits, pauses, seeks and rebalances like
confluent_kafka's consumer, with each batch as columns."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaException, Message, TopicPartition

from services.common.kafka import BatchConsumer, Fetch, admin_client, batch_consumer, ensure_topics, producer
from services.common.settings import Settings
from services.stack.runtime import Stack
from tests.fixtures.pipeline import committed_offsets

TopicFactory = Callable[[int], str]
Coordinate = tuple[int, int]  # (partition, offset)


@dataclass(frozen=True, slots=True)
class Produced:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]] | None
    timestamp_ms: int


@pytest.fixture
def new_topic(stack: Stack, settings: Settings) -> Iterator[TopicFactory]:
    """Creates topics with a given number of partitions; deletes them (and only them) afterwards."""
    created: list[str] = []

    def make(partitions: int) -> str:
        name = f"test-batch-{uuid.uuid4().hex[:12]}"
        ensure_topics(settings.kafka.model_copy(update={"topic_partitions": partitions}), [name])
        created.append(name)
        return name

    yield make
    if created:
        admin = admin_client(settings.kafka)  # kept alive until the deletions are done
        for future in admin.delete_topics(created, operation_timeout=30).values():
            future.result(timeout=30)


def _produce(settings: Settings, topic: str, records: list[tuple[int, Produced]]) -> dict[Coordinate, Produced]:
    """Produces ``(partition, record)`` pairs; returns each record by the coordinate it landed at."""
    client = producer(settings.kafka, **{"linger.ms": 5})
    landed: dict[Coordinate, Produced] = {}

    def delivered(record: Produced) -> Callable[[Any, Message], None]:
        def report(error: Any, message: Message) -> None:
            assert error is None, error
            landed[_coordinate(message)] = record

        return report

    for partition, record in records:
        client.produce(
            topic,
            value=record.value,
            key=record.key,
            partition=partition,
            timestamp=record.timestamp_ms,
            headers=record.headers,
            on_delivery=delivered(record),
        )
    assert client.flush(30) == 0
    assert len(landed) == len(records)
    return landed


def _coordinate(message: Message) -> Coordinate:
    partition, offset = message.partition(), message.offset()
    assert partition is not None
    assert offset is not None
    return partition, offset


def _simple(settings: Settings, topic: str, partitions: int, per_partition: int) -> dict[Coordinate, Produced]:
    now = int(time.time() * 1000)
    records = [
        (p, Produced(f"k{p}-{i}".encode(), f"v{p}-{i}".encode(), None, now + i))
        for p in range(partitions)
        for i in range(per_partition)
    ]
    return _produce(settings, topic, records)


def _consume(consumer: BatchConsumer, count: int, timeout_s: float = 60.0) -> list[Fetch]:
    """Batches until ``count`` messages have come, then one more second that must bring none."""
    fetches: list[Fetch] = []
    got = 0
    deadline = time.monotonic() + timeout_s
    while got < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{got} of {count} messages after {timeout_s}s")
        fetch = consumer.consume(1000, 0.5)
        if len(fetch):
            fetches.append(fetch)
            got += len(fetch)
    extra = consumer.consume(1000, 1.0)
    assert len(extra) == 0, [extra.message(i).offset() for i in range(len(extra))]
    assert got == count
    return fetches


def _coordinates(fetches: list[Fetch]) -> list[Coordinate]:
    return [
        (partition, int(offset))
        for f in fetches
        for _, partition, start, stop in f.runs
        for offset in f.offsets[start:stop]
    ]


def _wait_for_assignment(consumer: BatchConsumer, partitions: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(consumer.assignment()) < partitions:
        assert time.monotonic() < deadline, f"assigned {consumer.assignment()} after {timeout_s}s"
        assert len(consumer.consume(100, 0.2)) == 0


def test_every_record_comes_back_once_as_columns(
    new_topic: TopicFactory, settings: Settings, unique_group: str
) -> None:
    topic = new_topic(3)
    now = int(time.time() * 1000)
    records = [
        (i % 3, Produced(f"key-{i}".encode(), f"value-{i}".encode() * (i % 7 + 1), [("n", str(i).encode())], now - i))
        for i in range(600)
    ]
    records.append((1, Produced(b"gone", None, None, now + 1)))  # a tombstone
    records.append((2, Produced(None, b"x" * 500_000, [("big", b"yes"), ("empty", None)], now + 2)))
    records.append((0, Produced(b"no-headers", b"", None, now + 3)))  # an empty, not a null, value
    produced = _produce(settings, topic, records)

    consumer = batch_consumer(settings.kafka, unique_group)
    consumer.subscribe([topic])
    try:
        fetches = _consume(consumer, len(produced))
    finally:
        consumer.close()

    coordinates = _coordinates(fetches)
    assert len(coordinates) == len(set(coordinates)) == len(produced)
    assert set(coordinates) == set(produced)
    for fetch in fetches:
        _check_runs(fetch, topic)
        for i in range(len(fetch)):
            message = fetch.message(i)
            record = produced[_coordinate(message)]
            assert message.topic() == topic
            assert message.value() == record.value == fetch.values[i].as_py()
            assert message.key() == record.key
            assert message.headers() == record.headers
            assert message.timestamp() == (1, record.timestamp_ms)  # 1: the producer's create time
            assert fetch.timestamps_ms[i] == record.timestamp_ms
            assert fetch.offsets[i] == message.offset()
        assert fetch.values.null_count == sum(1 for i in range(len(fetch)) if fetch.message(i).value() is None)
    assert sum(f.values.null_count for f in fetches) == 1


def _check_runs(fetch: Fetch, topic: str) -> None:
    """Runs tile the batch in order; each is one partition with consecutive offsets; neighbours differ."""
    assert fetch.runs, "a non-empty batch has runs"
    assert fetch.runs[0][2] == 0
    assert fetch.runs[-1][3] == len(fetch)
    for before, after in zip(fetch.runs, fetch.runs[1:], strict=False):
        assert before[3] == after[2]
        assert before[:2] != after[:2]
    for run_topic, partition, start, stop in fetch.runs:
        assert run_topic == topic
        assert start < stop
        assert {fetch.message(i).partition() for i in range(start, stop)} == {partition}
        offsets = fetch.offsets[start:stop].tolist()
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))


def test_commit_returns_each_partition_and_is_visible_to_other_clients(
    new_topic: TopicFactory, settings: Settings, unique_group: str
) -> None:
    topic = new_topic(3)
    _simple(settings, topic, 3, 40)
    consumer = batch_consumer(settings.kafka, unique_group)
    consumer.subscribe([topic])
    try:
        _consume(consumer, 120)
        assert consumer.position([TopicPartition(topic, p) for p in range(3)]) == [
            TopicPartition(topic, p, 40) for p in range(3)
        ]
        assert consumer.get_watermark_offsets(TopicPartition(topic, 1)) == (0, 40)
        results = consumer.commit([TopicPartition(topic, p, 40 - p) for p in range(3)])
    finally:
        consumer.close()

    assert [(r.topic, r.partition, r.offset, r.error) for r in results] == [(topic, p, 40 - p, None) for p in range(3)]
    assert committed_offsets(settings, unique_group, [(topic, p) for p in range(3)]) == {
        (topic, p): 40 - p for p in range(3)
    }


def test_a_commit_in_the_revoke_callback_of_close_lands(
    new_topic: TopicFactory, settings: Settings, unique_group: str
) -> None:
    topic = new_topic(3)
    _simple(settings, topic, 3, 25)
    revoked: list[tuple[list[TopicPartition], list[Any]]] = []

    def on_revoke(consumer: BatchConsumer, partitions: list[TopicPartition]) -> None:
        positions = consumer.position(partitions)
        revoked.append((partitions, consumer.commit(positions)))

    consumer = batch_consumer(settings.kafka, unique_group)
    consumer.subscribe([topic], on_revoke=on_revoke)
    _consume(consumer, 75)
    assert not revoked
    consumer.close()

    assert len(revoked) == 1
    partitions, results = revoked[0]
    assert sorted(p.partition for p in partitions) == [0, 1, 2]
    assert all(r.error is None and r.offset == 25 for r in results)
    assert committed_offsets(settings, unique_group, [(topic, p) for p in range(3)]) == {
        (topic, p): 25 for p in range(3)
    }


def test_pause_stops_a_partition_and_resume_restarts_it(
    new_topic: TopicFactory, settings: Settings, unique_group: str
) -> None:
    topic = new_topic(3)
    consumer = batch_consumer(settings.kafka, unique_group)

    def on_assign(client: BatchConsumer, partitions: list[TopicPartition]) -> None:
        client.pause([p for p in partitions if p.partition == 0])  # re-enters the consumer mid-rebalance

    consumer.subscribe([topic], on_assign=on_assign)
    try:
        _wait_for_assignment(consumer, 3)
        _simple(settings, topic, 3, 30)
        before = _coordinates(_consume(consumer, 60))
        assert sorted({p for p, _ in before}) == [1, 2]
        consumer.resume([TopicPartition(topic, 0)])
        after = _coordinates(_consume(consumer, 30))
    finally:
        consumer.close()
    assert after == [(0, offset) for offset in range(30)]


def test_seek_delivers_again_from_the_offset(new_topic: TopicFactory, settings: Settings, unique_group: str) -> None:
    topic = new_topic(1)
    produced = _simple(settings, topic, 1, 20)
    consumer = batch_consumer(settings.kafka, unique_group)
    consumer.subscribe([topic])
    try:
        _consume(consumer, 20)
        consumer.seek(TopicPartition(topic, 0, 5))
        again = _consume(consumer, 15)
    finally:
        consumer.close()
    assert _coordinates(again) == [(0, offset) for offset in range(5, 20)]
    values = [v for f in again for v in f.values.to_pylist()]
    assert values == [produced[(0, offset)].value for offset in range(5, 20)]


@dataclass
class Member:
    """One group member that, like the writer, commits what it read when partitions are revoked."""

    consumer: BatchConsumer
    topic: str
    assigned: set[int] = field(default_factory=set)
    next_offset: dict[int, int] = field(default_factory=dict)
    read: list[Coordinate] = field(default_factory=list)
    events: list[tuple[str, list[int]]] = field(default_factory=list)

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lost)

    def poll(self) -> None:
        fetch = self.consumer.consume(500, 0.2)
        for _, partition, start, stop in fetch.runs:
            if partition not in self.assigned:  # fetched before a revoke in the same call: not ours any more
                continue
            offsets = fetch.offsets[start:stop].tolist()
            self.read.extend((partition, o) for o in offsets)
            self.next_offset[partition] = offsets[-1] + 1

    def _assign(self, _consumer: BatchConsumer, partitions: list[TopicPartition]) -> None:
        self.events.append(("assign", sorted(p.partition for p in partitions)))
        self.assigned |= {p.partition for p in partitions}

    def _revoke(self, consumer: BatchConsumer, partitions: list[TopicPartition]) -> None:
        self.events.append(("revoke", sorted(p.partition for p in partitions)))
        done = [
            TopicPartition(self.topic, p.partition, self.next_offset[p.partition])
            for p in partitions
            if p.partition in self.next_offset
        ]
        if done:
            assert all(r.error is None for r in consumer.commit(done))
        self.assigned -= {p.partition for p in partitions}

    def _lost(self, _consumer: BatchConsumer, partitions: list[TopicPartition]) -> None:
        self.events.append(("lost", sorted(p.partition for p in partitions)))
        self.assigned -= {p.partition for p in partitions}


def test_two_members_share_the_partitions_without_losing_or_repeating_a_record(
    new_topic: TopicFactory, settings: Settings, unique_group: str
) -> None:
    topic = new_topic(6)
    produced = _simple(settings, topic, 6, 200)
    first = Member(batch_consumer(settings.kafka, unique_group), topic)
    second = Member(batch_consumer(settings.kafka, unique_group), topic)
    try:
        first.subscribe()
        deadline = time.monotonic() + 60
        while len(first.read) < 300:  # the first member reads a part of everything alone
            assert time.monotonic() < deadline, first.events
            first.poll()
        second.subscribe()
        deadline = time.monotonic() + 60
        while len(first.read) + len(second.read) < len(produced) or not (first.assigned and second.assigned):
            assert time.monotonic() < deadline, (first.events, second.events)
            first.poll()
            second.poll()
        shared = (set(first.assigned), set(second.assigned))
        before_close = list(first.events)
    finally:
        first.consumer.close()
        second.consumer.close()

    read = first.read + second.read
    assert len(read) == len(set(read)) == len(produced)
    assert set(read) == set(produced)
    assert shared[0].isdisjoint(shared[1])
    assert shared[0] | shared[1] == set(range(6))
    assert before_close[0] == ("assign", list(range(6)))
    revokes = [parts for kind, parts in before_close if kind != "assign"]
    # Cooperative-sticky: the first member gives up only what moves, never its whole assignment.
    assert revokes, before_close
    assert all(kind == "revoke" and 0 < len(parts) < 6 for kind, parts in before_close[1:] if kind != "assign")
    assert second.events[0][0] == "assign"


def test_an_exception_in_a_rebalance_callback_comes_out_of_consume(
    new_topic: TopicFactory, settings: Settings, unique_group: str
) -> None:
    topic = new_topic(1)

    def on_assign(_consumer: BatchConsumer, _partitions: list[TopicPartition]) -> None:
        raise RuntimeError("refused")

    consumer = batch_consumer(settings.kafka, unique_group)
    consumer.subscribe([topic], on_assign=on_assign)
    try:
        raised = _consume_until_raised(consumer)
        assert isinstance(raised, RuntimeError)
        assert str(raised) == "refused"
        assert consumer.assignment() == [TopicPartition(topic, 0)]  # assigned before the callback ran
    finally:
        consumer.close()


def _consume_until_raised(consumer: BatchConsumer, timeout_s: float = 60.0) -> Exception:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            consumer.consume(100, 0.5)
        except Exception as exc:  # the test inspects whatever came out
            return exc
    pytest.fail(f"nothing raised in {timeout_s}s")


def test_a_bad_configuration_key_is_a_value_error_naming_it(settings: Settings) -> None:
    unknown: dict[str, Any] = {"no.such.property": "1"}
    with pytest.raises(ValueError, match=r"no\.such\.property"):
        batch_consumer(settings.kafka, "unused", **unknown)
    malformed: dict[str, Any] = {"session.timeout.ms": "soon"}
    with pytest.raises(ValueError, match=r"session\.timeout\.ms"):
        batch_consumer(settings.kafka, "unused", **malformed)


def test_every_method_after_close_raises_kafka_exception(settings: Settings, unique_group: str) -> None:
    consumer = batch_consumer(settings.kafka, unique_group)
    consumer.close()
    consumer.close()  # idempotent
    tp = TopicPartition("t", 0, 1)
    calls: list[Callable[[], object]] = [
        lambda: consumer.consume(10, 0.1),
        lambda: consumer.subscribe(["t"]),
        lambda: consumer.commit([tp]),
        lambda: consumer.pause([tp]),
        lambda: consumer.resume([tp]),
        lambda: consumer.seek(tp),
        lambda: consumer.position([tp]),
        lambda: consumer.get_watermark_offsets(tp),
        consumer.assignment,
    ]
    for call in calls:
        with pytest.raises(KafkaException, match="closed"):
            call()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_librdkafka_log_lines_reach_the_given_logger(
    new_topic: TopicFactory, settings: Settings, unique_group: str
) -> None:
    topic = new_topic(1)
    logger = logging.getLogger(f"test.librdkafka.{unique_group}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = _Records()
    logger.addHandler(handler)
    consumer = batch_consumer(settings.kafka, unique_group, debug="consumer", logger=logger)
    consumer.subscribe([topic])
    try:
        _wait_for_assignment(consumer, 1)
    finally:
        consumer.close()
    assert handler.records, "no log line"
    subscribed = [r for r in handler.records if r.getMessage().startswith("SUBSCRIBE: ")]
    assert subscribed, [r.getMessage() for r in handler.records]
    assert {r.levelno for r in subscribed} == {logging.DEBUG}  # librdkafka's level 7
    # Served by consume and close on this thread, never from one of librdkafka's.
    assert {r.thread for r in handler.records} == {threading.get_ident()}
