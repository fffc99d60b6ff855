"""Reading a cluster's offsets from outside its consumers: groups, committed offsets, watermarks, timestamps.

:class:`OffsetsReader` serves ``cdcflow monitor``: it never joins a group and never commits. Committed offsets
come from the group coordinator (``OffsetFetch``), so they are there whether or not the group's members are
alive; log start and end offsets come in one ``ListOffsets`` request per poll for every partition at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

from services.common.kafka.clients import Admin, admin_client, consumer
from services.common.settings import KafkaSettings

__all__ = ["DlqTail", "FirstRecord", "OffsetsReader", "Watermarks", "committed_offsets", "log_bounds"]

TP = tuple[str, int]

# The reader's own group id: it only assigns partitions and never commits, so the group never exists on the
# broker; it must still not look like a cdcflow group.
_READER_GROUP = "_cdcflow-monitor-reader"
_RETRY_PAUSE_S = 0.5
_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Watermarks:
    """A partition's log start (oldest offset still held) and end (the high watermark: the next offset)."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class FirstRecord:
    """The first readable record at or after an offset: its offset and timestamp; ``offset`` None when there is
    none before the partition's end."""

    offset: int | None
    timestamp_ms: int | None


class OffsetsReader:
    """Groups, committed offsets, watermarks and record timestamps, each call bounded by ``timeout_s``."""

    def __init__(self, settings: KafkaSettings, *, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._admin = admin_client(settings)
        # the end of a partition is an event, so "no record after this offset" differs from "no answer yet"
        self._reader = consumer(settings, _READER_GROUP, **{"enable.partition.eof": True})

    def close(self) -> None:
        self._reader.close()

    def groups(self) -> list[str]:
        """Every consumer group the cluster knows, with or without live members. Raises when a broker did not
        answer: the groups it coordinates would be missing, and read as deleted."""
        result = self._admin.list_consumer_groups(request_timeout=self._timeout_s).result(timeout=self._timeout_s)
        if result.errors:
            raise KafkaException(f"listing the consumer groups failed on some brokers: {result.errors[0]}")
        return sorted(str(g.group_id) for g in result.valid)

    def committed(self, group: str) -> dict[TP, int]:
        """The offsets ``group`` has committed, by partition (only partitions with a commit)."""
        return committed_offsets(self._admin, group, timeout_s=self._timeout_s)

    def assigned_topics(self, group: str) -> set[str]:
        """Topics assigned to the group's live members: a partition consumed but never committed has lag too."""
        futures = self._admin.describe_consumer_groups([group], request_timeout=self._timeout_s)
        description = futures[group].result(timeout=self._timeout_s)
        return {
            str(tp.topic)
            for member in description.members or []
            if member.assignment is not None
            for tp in member.assignment.topic_partitions or []
        }

    def partitions(self, topics: Iterable[str]) -> list[TP]:
        """Every partition of each topic that exists (a deleted topic has none)."""
        metadata = self._admin.list_topics(timeout=self._timeout_s).topics
        return [
            (topic, p) for topic in sorted(set(topics)) if topic in metadata for p in sorted(metadata[topic].partitions)
        ]

    def topics(self, prefix: str) -> list[str]:
        return sorted(t for t in self._admin.list_topics(timeout=self._timeout_s).topics if t.startswith(prefix))

    def watermarks(self, partitions: Iterable[TP]) -> dict[TP, Watermarks]:
        """Log start and end offset of every partition (see :func:`log_bounds`)."""
        return log_bounds(self._admin, partitions, timeout_s=self._timeout_s)

    def first_record(self, topic: str, partition: int, offset: int) -> FirstRecord | None:
        """The first record a read-committed consumer gets from ``offset`` on; None when it could not tell in time.

        Transaction markers, and records of aborted or still open transactions, are no records to it: a
        partition whose only offsets after ``offset`` are such has none (``FirstRecord(None, None)``).
        """
        self._reader.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + self._timeout_s
        try:
            while (left := deadline - time.monotonic()) > 0:
                message = self._reader.poll(min(left, 1.0))
                if message is None:
                    continue
                error = message.error()
                if error is None:
                    kind, value = message.timestamp()
                    return FirstRecord(int(message.offset() or 0), int(value) if kind and value > 0 else None)
                if error.code() == KafkaError._PARTITION_EOF:
                    return FirstRecord(None, None)
                return None
            return None
        finally:
            self._reader.unassign()


def committed_offsets(admin: Admin, group: str, *, timeout_s: float) -> dict[TP, int]:
    """The offsets ``group`` has committed, by partition (only partitions with a commit), in one request to the
    group coordinator: whether or not the group's members are alive, and without joining it."""
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s)
    answer = futures[group].result(timeout=timeout_s)
    return {
        (str(tp.topic), int(tp.partition)): int(tp.offset)
        for tp in answer.topic_partitions or []
        if tp.error is None and tp.offset >= 0
    }


def log_bounds(admin: Admin, partitions: Iterable[TP], *, timeout_s: float) -> dict[TP, Watermarks]:
    """Log start and end offset of every partition, in two batched requests (not one per partition);
    partitions that failed (their leader is moving, say) are left out."""
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    starts = _list_offsets(admin, wanted, _EARLIEST, timeout_s)
    ends = _list_offsets(admin, wanted, _LATEST, timeout_s)
    return {tp: Watermarks(starts[tp], ends[tp]) for tp in wanted if tp in starts and tp in ends}


def _list_offsets(admin: Admin, partitions: list[TP], spec: OffsetSpec, timeout_s: float) -> dict[TP, int]:
    """Offsets per partition; a partition that failed (its leader not yet known to the client: a topic created
    a moment ago) is asked once more after a moment, then left out."""
    found: dict[TP, int] = {}
    for attempt in range(2):
        missing = [tp for tp in partitions if tp not in found]
        if not missing:
            break
        if attempt:
            time.sleep(_RETRY_PAUSE_S)
        request = {TopicPartition(t, p): spec for t, p in missing}
        for tp, future in admin.list_offsets(request, request_timeout=timeout_s).items():
            try:
                found[(str(tp.topic), int(tp.partition))] = int(future.result(timeout=timeout_s).offset)
            except KafkaException:
                continue
    return found


_TAIL_TIMEOUTS = 3  # one read of the DLQs lasts at most this many request timeouts


class DlqTail:
    """Reads what is new in some topics, from where it stopped (from their start the first time)."""

    def __init__(self, settings: KafkaSettings, *, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._client = consumer(settings, _READER_GROUP, **{"enable.partition.eof": False})
        self._next: dict[TP, int] = {}

    def close(self) -> None:
        self._client.close()

    def read(self, ends: dict[TP, Watermarks], max_records: int = 50_000) -> list[Message]:
        """The records from each partition's last read position (or its start) up to ``ends``; at most
        ``max_records`` per call, and for at most a few timeouts, so a large backlog is read over several polls.

        A partition is read once the consumer's position reaches its end, not its last record: a topic written
        in Kafka transactions (the enricher's DLQ) ends with a commit marker no consumer is given, and records
        still arriving past the end must not keep the read going."""
        todo = {tp: max(self._next.get(tp, w.start), w.start) for tp, w in ends.items()}
        todo = {tp: at for tp, at in todo.items() if at < ends[tp].end}
        if not todo:
            return []
        self._client.assign([TopicPartition(t, p, at) for (t, p), at in todo.items()])
        read: list[Message] = []
        deadline = time.monotonic() + _TAIL_TIMEOUTS * self._timeout_s
        try:
            while todo and len(read) < max_records and time.monotonic() < deadline:
                batch = self._client.consume(num_messages=min(5_000, max_records - len(read)), timeout=self._timeout_s)
                for message in batch:
                    tp = (str(message.topic()), int(message.partition() or 0))
                    if message.error() is None and tp in todo and int(message.offset() or 0) < ends[tp].end:
                        read.append(message)
                        self._next[tp] = int(message.offset() or 0) + 1
                self._drop_read(todo, ends)
                if not batch:
                    break
        finally:
            self._client.unassign()
        return read

    def _drop_read(self, todo: dict[TP, int], ends: dict[TP, Watermarks]) -> None:
        """Take out of ``todo`` every partition whose position has reached its end (markers are skipped too)."""
        for position in self._client.position([TopicPartition(t, p) for t, p in todo]):
            tp = (str(position.topic), int(position.partition))
            if position.offset >= ends[tp].end:
                self._next[tp] = ends[tp].end  # what lies beyond was not counted: the next read takes it
                del todo[tp]
