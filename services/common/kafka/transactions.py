"""Kafka clients for tools that read whole topics and write in transactions (DLQ replay, the enricher).

- :class:`TransactionalProducer`: records of several topics committed together or not at all. Its
  ``transactional.id`` also fences: a second producer that starts with the same id aborts the first one's open
  transaction, and every later call of the first one fails with :class:`ProducerFencedError`.
- :func:`read_topic`: every record of a topic up to the end offsets it finds when called, committed records
  only (``read_committed``), with a plain client that joins no group and commits nothing.
- :func:`delete_records_before`: Kafka's DeleteRecords (the log start moves forward).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from services.common.kafka.clients import PRODUCER_DEFAULTS, _base, admin_client, consumer
from services.common.settings import KafkaSettings

__all__ = [
    "ProducerFencedError",
    "TopicRead",
    "TransactionalProducer",
    "delete_records_before",
    "is_fenced",
    "read_record",
    "read_topic",
    "topic_names",
    "topic_watermarks",
]

# FENCED_INSTANCE_ID: a consumer replaced by another started with the same group.instance.id (static membership)
_FENCED_CODES = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.FENCED_INSTANCE_ID,
}


class ProducerFencedError(KafkaException):
    """Another producer with the same transactional id started: this one may not commit anything any more."""


def is_fenced(exc: BaseException) -> bool:
    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return isinstance(exc, ProducerFencedError)
    error = exc.args[0]
    # a consumer fenced by another with its group.instance.id reports _FATAL, naming the cause in its text only
    return error.code() in _FENCED_CODES or (error.code() == KafkaError._FATAL and "fenced" in error.str().lower())


class TransactionalProducer:
    """A producer whose records become visible (to ``read_committed`` readers) only when committed together."""

    def __init__(self, settings: KafkaSettings, transactional_id: str, *, timeout_s: float = 30.0, **overrides: Any):
        config = {
            # ``extra`` may change it, up to the broker's transaction.max.timeout.ms (a longer one is refused)
            "transaction.timeout.ms": 60_000,
            **_base(settings),
            **PRODUCER_DEFAULTS,
            "transactional.id": transactional_id,
            "linger.ms": 5,
            **overrides,
        }
        self._producer = Producer(config)
        self._timeout_s = timeout_s

    def init(self) -> None:
        """Register the transactional id: aborts what an earlier producer of the same id left open, fences it."""
        self._call(self._producer.init_transactions, self._timeout_s)

    def begin(self) -> None:
        self._call(self._producer.begin_transaction)

    def produce(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        partition: int = -1,
        timestamp_ms: int = 0,
    ) -> None:
        kwargs: dict[str, Any] = {"timestamp": timestamp_ms} if timestamp_ms > 0 else {}
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, partition=partition, **kwargs)
                break
            except BufferError:  # the local queue is full: let deliveries make room
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise _fenced_or(exc) from exc
        self._producer.poll(0)

    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        """``(key, value)`` records to ``topic``, partitioned by key: :meth:`produce` for a batch, serving the
        producer's events once at the end rather than after every record."""
        produce = self._producer.produce
        for key, value in records:
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:  # the local queue is full: let deliveries make room
                    self._producer.poll(0.1)
                except KafkaException as exc:
                    raise _fenced_or(exc) from exc
        self._producer.poll(0)

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Commit a consumer group's ``offsets`` as part of this transaction: they count only if it commits.

        ``group_metadata`` is the consumer's ``consumer_group_metadata()``: with it the group coordinator
        refuses the offsets of a member that has lost its partitions in a rebalance (a zombie).
        """
        self._call(self._producer.send_offsets_to_transaction, offsets, group_metadata, self._timeout_s)

    def commit(self) -> None:
        self._call(self._producer.commit_transaction, self._timeout_s)

    def abort(self) -> None:
        self._call(self._producer.abort_transaction, self._timeout_s)

    def close(self) -> None:
        self._producer.flush(5)

    def _call(self, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except KafkaException as exc:
            raise _fenced_or(exc) from exc


def _fenced_or(exc: KafkaException) -> KafkaException:
    return ProducerFencedError(exc.args[0]) if is_fenced(exc) else exc


@dataclass(frozen=True, slots=True)
class TopicRead:
    """What :func:`read_topic` read: the records in partition and offset order, and each partition's
    ``(log start, end)`` at the time (the records are those below ``end``)."""

    messages: list[Message]
    ends: dict[int, tuple[int, int]]


def topic_names(settings: KafkaSettings, prefix: str = "", *, timeout_s: float = 30.0) -> list[str]:
    """The topics whose name starts with ``prefix``, sorted."""
    admin = admin_client(settings)
    return sorted(name for name in admin.list_topics(timeout=timeout_s).topics if name.startswith(prefix))


def topic_watermarks(settings: KafkaSettings, topic: str, *, timeout_s: float = 30.0) -> dict[int, tuple[int, int]]:
    """Each partition's ``(log start, end)``; KeyError when the topic does not exist."""
    client = consumer(settings, f"cdcflow-reader-{uuid.uuid4().hex[:8]}", **{"isolation.level": "read_committed"})
    try:
        return _watermarks(client, topic, timeout_s)
    finally:
        client.close()


def _watermarks(client: Any, topic: str, timeout_s: float) -> dict[int, tuple[int, int]]:
    metadata = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise KeyError(topic)
    deadline = time.monotonic() + timeout_s
    found = {}
    for partition in sorted(metadata.partitions):
        while True:
            try:
                found[partition] = client.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                break
            except KafkaException as exc:  # a topic created a moment ago has no leader yet for a while
                error = exc.args[0]
                if time.monotonic() > deadline or not (
                    error.retriable() or error.code() == KafkaError.NOT_LEADER_FOR_PARTITION
                ):
                    raise
                time.sleep(0.2)
    return found


def read_topic(settings: KafkaSettings, topic: str, *, timeout_s: float = 60.0) -> TopicRead:
    """Every committed record of ``topic`` below the end offsets at the time of the call.

    KeyError when the topic does not exist. Control records (transaction markers) and aborted records take
    offsets too: a partition is done once the reader's position has passed its end offset.
    """
    client = consumer(
        settings,
        f"cdcflow-reader-{uuid.uuid4().hex[:8]}",
        **{"isolation.level": "read_committed", "enable.partition.eof": False},
    )
    try:
        ends = _watermarks(client, topic, timeout_s)
        todo = {p: high for p, (low, high) in ends.items() if high > low}
        messages: list[Message] = []
        if todo:
            client.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
            messages = _read_until(client, topic, {p: ends[p][0] for p in todo}, todo, timeout_s)
        messages.sort(key=lambda m: (int(m.partition() or 0), int(m.offset() or 0)))
        return TopicRead(messages, ends)
    finally:
        client.close()


def _read_until(
    client: Any, topic: str, starts: dict[int, int], todo: dict[int, int], timeout_s: float
) -> list[Message]:
    """The records of ``topic`` from ``starts`` (where ``client`` is assigned) below ``todo``'s end offsets."""
    deadline = time.monotonic() + timeout_s
    found: list[Message] = []
    reached = dict(starts)
    while todo:
        if time.monotonic() > deadline:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {topic} took over {timeout_s:g}s"))
        # ask for no more than is left: consume() waits for its whole count (or the timeout) before returning
        left = sum(max(1, end - reached[p]) for p, end in todo.items())
        for message in client.consume(num_messages=min(left, 5_000), timeout=0.1):
            error = message.error()
            if error is not None:
                raise KafkaException(error)
            partition, offset = int(message.partition() or 0), int(message.offset() or 0)
            if partition in todo and offset < todo[partition]:
                found.append(message)
                reached[partition] = offset + 1
        for position in client.position([TopicPartition(topic, p) for p in todo]):
            if position.offset >= todo[position.partition]:
                del todo[position.partition]
    return found


def delete_records_before(
    settings: KafkaSettings, topic: str, before: dict[int, int], *, timeout_s: float = 30.0
) -> dict[int, int]:
    """Delete each partition's records below ``before[partition]``; returns the new log start offsets."""
    if not before:
        return {}
    admin = admin_client(settings)
    wanted = [TopicPartition(topic, partition, offset) for partition, offset in sorted(before.items())]
    futures = admin.delete_records(wanted, request_timeout=timeout_s, operation_timeout=timeout_s)
    return {tp.partition: int(future.result(timeout=timeout_s).low_watermark) for tp, future in futures.items()}


def read_record(
    settings: KafkaSettings, topic: str, partition: int, offset: int, *, timeout_s: float = 30.0
) -> Message | None:
    """The committed record at ``topic[partition]@offset``; None when the log no longer (or never) held it."""
    client = consumer(
        settings,
        f"cdcflow-reader-{uuid.uuid4().hex[:8]}",
        **{"isolation.level": "read_committed", "enable.partition.eof": False},
    )
    try:
        low, high = client.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        if not low <= offset < high:
            return None
        client.assign([TopicPartition(topic, partition, offset)])
        found = _read_until(client, topic, {partition: offset}, {partition: offset + 1}, timeout_s)
        return next((m for m in found if int(m.offset() or 0) == offset), None)
    finally:
        client.close()
