"""The dead-letter queue of a consumer group: ``_cdcflow.dlq.<group>``.

A bad record is re-published unchanged (key, value, headers) plus ``cdcflow.error.*`` and ``cdcflow.source.*``
headers; its timestamp is the time it was dead-lettered, the original's is kept in ``cdcflow.source.timestamp``
(the DLQ's retention counts from the record's timestamp: a record older than it would be deleted at once).
The source offset is committed only after the DLQ record is acknowledged, so a DLQ'd record is never lost.

Each bad record is published once. Its idempotency key is its original coordinates, the
``cdcflow.source.topic/partition/offset`` headers:

- Within one writer, a record sent and not yet acknowledged (in flight) or acknowledged is not sent again
  when its batch is read again after a transient failure; one whose send failed is.
- Across writers (a kill -9 or a lost partition between the DLQ send at ingest and the commit at flush): all
  DLQ records of one source partition go to one DLQ partition (a hash of the source topic and partition),
  and the first time a writer dead-letters a record of a source partition it owns, it reads what is new in
  that DLQ partition (one reader, incrementally) and takes the source offsets it finds there as published.
- What remains: a killed writer's send still travelling to the broker while its successor reads the DLQ
  partition. Such a copy is byte-for-byte the same record under the same key; whoever reads the DLQ counts
  a record by its ``cdcflow.source.*`` headers, never by DLQ offset.

Why not a transactional producer committing the source offsets with the DLQ records: the writer consumes
through the native batch consumer, which does not expose the group metadata that
``send_offsets_to_transaction`` needs, and it commits per partition after the lake write, outside any
producer transaction.

``publish`` never lets the client's synchronous errors out:

- The local queue is full (``BufferError``): delivery reports are served until there is room — backpressure,
  nothing dropped. After ``queue_wait_s`` without room (the broker unreachable) it raises
  :class:`DlqDeliveryError`, a transient error: the partition is paused, read again and retried later.
- The record is too large for the DLQ (the client refuses it at once, or the broker in its delivery report):
  it is published again in the next smaller form, each announced by headers and logged as an error —
  1. the value compressed with zlib (``cdcflow.value.encoding: deflate``), lossless;
  2. the value left out (empty) with ``cdcflow.value.omitted: true``, its size and SHA-256; the original stays in
     the source topic, at the coordinates the ``cdcflow.source.*`` headers give, for as long as its retention.
  Key, original headers and error headers are kept in every form. A record too large even without
  its value raises :class:`DlqRecordTooLargeError`: its partition stays paused and retried, never skipped.
- Any other client error raises :class:`DlqDeliveryError` (retried later).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.debezium.records import DecodeFailure, Headers
from services.common.kafka import (
    MAX_RECORD_BYTES,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
    consumer,
    ensure_topics,
    producer,
)
from services.common.kafka.clients import ensure_topic_minimum, watermarks
from services.common.logging import get_logger
from services.common.replay import VALUE_ENCODING, VALUE_OMITTED, VALUE_SHA256, VALUE_SIZE
from services.common.settings import KafkaSettings
from services.consumer.errors import DlqDeliveryError, DlqRecordTooLargeError

__all__ = ["DlqPublisher", "dlq_partition", "dlq_topic", "fitted_value", "source_coordinate"]

log = get_logger(__name__)

_MAX_DETAIL = 2_000
_QUEUE_WAIT_S = 30.0
_TOO_LARGE = "MSG_SIZE_TOO_LARGE"

Header = tuple[str, str | bytes | None]

# The forms a record is published in, each smaller than the one before (see the module docstring).
_AS_IS, _DEFLATED, _OMITTED = 0, 1, 2
_FORM_NAMES = ("as_is", "deflated", "omitted")


def fitted_value(value: bytes | None, form: int) -> tuple[bytes | None, list[Header]]:
    """The value to publish in ``form`` and the headers that say what was done to it."""
    if form == _AS_IS or value is None:
        return value, []
    size = (VALUE_SIZE, str(len(value)))
    if form == _DEFLATED:
        return zlib.compress(value, 6), [(VALUE_ENCODING, "deflate"), size]
    digest = (VALUE_SHA256, hashlib.sha256(value).hexdigest())
    return b"", [(VALUE_OMITTED, "true"), size, digest]


def dlq_topic(group_id: str) -> str:
    return f"_cdcflow.dlq.{group_id}"


def _original_headers(headers: Headers | None) -> list[tuple[str, str | bytes | None]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


_SCAN_TIMEOUT_S = 30.0
_SOURCE_TOPIC, _SOURCE_PARTITION, _SOURCE_OFFSET = (
    "cdcflow.source.topic",
    "cdcflow.source.partition",
    "cdcflow.source.offset",
)


def dlq_partition(topic: str, partition: int, dlq_partitions: int) -> int:
    """The DLQ partition that holds every DLQ record of one source partition (stable across processes)."""
    return zlib.crc32(f"{topic}/{partition}".encode()) % dlq_partitions


def source_coordinate(message: Message) -> tuple[str, int, int] | None:
    """``(topic, partition, offset)`` a DLQ record came from, from its ``cdcflow.source.*`` headers."""
    headers = {k: v for k, v in _original_headers(message.headers()) if k.startswith("cdcflow.source.")}
    try:
        topic, partition, offset = (headers[name] for name in (_SOURCE_TOPIC, _SOURCE_PARTITION, _SOURCE_OFFSET))
        text = [v.decode() if isinstance(v, bytes) else str(v) for v in (topic, partition, offset)]
        return text[0], int(text[1]), int(text[2])
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


@dataclass
class _Pending:
    """One source partition's DLQ records not yet below its committed offset."""

    inflight: set[int] = field(default_factory=set)  # sent, delivery not reported yet
    acked: set[int] = field(default_factory=set)  # in the DLQ (acknowledged, or found there by the scan)
    failed: list[str] = field(default_factory=list)


def _raise_size_limit(settings: KafkaSettings, topic: str) -> None:
    """An existing DLQ topic keeps the limit it was created with; raise it to what the publisher needs.

    Without the permission to alter it the writer still runs: a record over the topic's limit is then stored
    deflated, or without its value (its coordinates and error are kept), and a warning says so now.
    """
    try:
        limit = ensure_topic_minimum(settings, topic, "max.message.bytes", MAX_RECORD_BYTES)
    except KafkaException as exc:
        log.warning(
            "dlq.topic_limit_low",
            topic=topic,
            wanted=MAX_RECORD_BYTES,
            error=str(exc),
            consequence="records over the topic's max.message.bytes are kept deflated or without their value",
        )
        return
    log.debug("dlq.topic_limit", topic=topic, max_message_bytes=limit)


class DlqPublisher:
    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        worker_id: str,
        *,
        queue_wait_s: float = _QUEUE_WAIT_S,
        read_timeout_s: float = _SCAN_TIMEOUT_S,
        create_topic: bool = True,
        **producer_overrides: Any,
    ) -> None:
        self.topic = dlq_topic(group_id)
        self._worker = worker_id
        self._queue_wait_s = queue_wait_s
        if create_topic:
            ensure_topics(settings, [self.topic])
            _raise_size_limit(settings, self.topic)
        config: dict[str, Any] = {"message.max.bytes": MAX_RECORD_BYTES + (1 << 20), "linger.ms": 5}
        self._producer: Producer = producer(settings, **{**config, **producer_overrides})
        self._read_timeout_s = read_timeout_s
        self._index = _DlqIndex(settings, self.topic, read_timeout_s)
        self._partitions = 0  # the DLQ topic's partition count, looked up at the first publish
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._forms: dict[tuple[str, int, int], int] = {}  # records published smaller than as they came

    def publish(self, failure: DecodeFailure) -> bool:
        """Queue one bad record; False when it was already acknowledged earlier (a retried batch).

        Raises only :class:`DlqDeliveryError` (transient), never the client's own errors.
        """
        message = failure.message
        topic, partition, offset = str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
        pending = self._pending_of(topic, partition)
        if offset in pending.acked or offset in pending.inflight:
            return False
        headers = _original_headers(message.headers()) + self._error_headers(failure, topic, partition, offset)
        coordinate = (topic, partition, offset)

        def delivered(error: Any, _msg: Any) -> None:
            pending.inflight.discard(offset)
            if error is None:
                pending.acked.add(offset)
                return
            if error.name() == _TOO_LARGE:  # the broker's limit is below ours: the retry publishes it smaller
                self._shrink(coordinate, str(error))
            pending.failed.append(f"offset {offset}: {error}")

        self._produce(coordinate, message, headers, delivered)
        pending.inflight.add(offset)
        self._producer.poll(0)
        return True

    def _pending_of(self, topic: str, partition: int) -> _Pending:
        """The partition's records, starting from those an earlier owner already put in the DLQ."""
        pending = self._pending.get((topic, partition))
        if pending is None:
            pending = _Pending(acked=self._published_earlier(topic, partition))
            self._pending[(topic, partition)] = pending
        return pending

    def _published_earlier(self, topic: str, partition: int) -> set[int]:
        """The source offsets of ``topic[partition]`` already in the DLQ, read from the DLQ partition that holds
        them (a writer that died or lost the partition before its commit may have published them)."""
        try:
            target = dlq_partition(topic, partition, self._dlq_partitions())
            found = self._index.offsets(topic, partition, target, self._brokers)
        except KafkaException as exc:
            raise DlqDeliveryError(f"reading {self.topic} for records of {topic}[{partition}]: {exc}") from exc
        if found:
            log.info("dlq.published_earlier", source=f"{topic}[{partition}]", records=len(found))
        return found

    def _brokers(self) -> str:
        """The brokers the producer writes to (the DLQ is read from the same cluster)."""
        brokers = self._producer.list_topics(self.topic, timeout=self._read_timeout_s).brokers.values()
        return ",".join(f"{b.host}:{b.port}" for b in brokers)

    def _dlq_partitions(self) -> int:
        if not self._partitions:
            metadata = self._producer.list_topics(self.topic, timeout=self._read_timeout_s).topics.get(self.topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise DlqDeliveryError(f"the DLQ topic {self.topic} has no partitions: {metadata and metadata.error}")
            self._partitions = len(metadata.partitions)
        return self._partitions

    def _produce(
        self, coordinate: tuple[str, int, int], message: Message, headers: list[Header], delivered: Any
    ) -> None:
        deadline = time.monotonic() + self._queue_wait_s
        while True:
            form = self._forms.get(coordinate, _AS_IS)
            if form >= len(_FORM_NAMES):
                raise DlqRecordTooLargeError(f"DLQ record for {coordinate} is too large even without its value")
            value, value_headers = fitted_value(message.value(), form)
            try:
                self._producer.produce(
                    self.topic,
                    partition=dlq_partition(coordinate[0], coordinate[1], self._dlq_partitions()),
                    value=value,
                    key=message.key(),
                    headers=headers + value_headers,
                    on_delivery=delivered,
                )
                return
            except BufferError:
                # the local queue is full: let deliveries make room (backpressure, nothing dropped)
                if time.monotonic() >= deadline:
                    raise DlqDeliveryError(
                        f"the DLQ producer's queue stayed full for {self._queue_wait_s:g}s (is the broker reachable?)"
                    ) from None
                self._producer.poll(0.1)
            except KafkaException as exc:
                error = exc.args[0]
                if error.name() != _TOO_LARGE:
                    raise DlqDeliveryError(f"DLQ publish of {coordinate} refused: {error}") from exc
                self._shrink(coordinate, str(error))

    def _shrink(self, coordinate: tuple[str, int, int], error: str) -> None:
        """Publish this record in its next smaller form from now on (past the last: it cannot be published,
        and the next attempt raises). Called from delivery reports too, so it never raises itself."""
        form = self._forms.get(coordinate, _AS_IS) + 1
        self._forms[coordinate] = form
        shrunk_to = _FORM_NAMES[form] if form < len(_FORM_NAMES) else "none left"
        log.error("dlq.record_too_large", source=list(coordinate), next_form=shrunk_to, error=error)

    def _error_headers(self, failure: DecodeFailure, topic: str, partition: int, offset: int) -> list[Header]:
        _, timestamp = failure.message.timestamp()
        return [
            ("cdcflow.error.class", failure.error_class),
            ("cdcflow.error.reason", failure.reason),
            ("cdcflow.error.message", failure.detail[:_MAX_DETAIL]),
            ("cdcflow.error.stage", failure.stage),
            ("cdcflow.error.time", str(time.time_ns() // 1_000_000)),
            ("cdcflow.source.topic", topic),
            ("cdcflow.source.partition", str(partition)),
            ("cdcflow.source.offset", str(offset)),
            ("cdcflow.source.timestamp", str(timestamp)),
            ("cdcflow.worker", self._worker),
        ]

    def confirm(self, topic: str, partition: int, timeout_s: float) -> None:
        """Block until every DLQ record of the partition is acknowledged; raise if one failed."""
        pending = self._pending.get((topic, partition))
        if pending is None or (not pending.inflight and not pending.failed):
            return
        self._producer.flush(timeout_s)
        if pending.failed:  # the failed ones are neither in flight nor acknowledged: a retry sends them again
            failed, pending.failed = pending.failed, []
            raise DlqDeliveryError(f"DLQ publish failed for {topic}[{partition}]: {failed[0]}")
        if pending.inflight:
            raise DlqDeliveryError(f"{len(pending.inflight)} DLQ record(s) still unacknowledged after {timeout_s}s")

    def forget_below(self, topic: str, partition: int, committed: int) -> None:
        """Acknowledged offsets below the committed position can never be retried again."""
        pending = self._pending.get((topic, partition))
        if pending is not None:
            pending.acked = {o for o in pending.acked if o >= committed}
        self._index.forget_below(topic, partition, committed)

    def drop(self, topic: str, partition: int) -> None:
        """Forget a partition that moved away; if it comes back, the DLQ is read again for it (in the meantime
        another owner may have published its records). A send still in flight is reported to the dropped
        bookkeeping and changes nothing."""
        self._pending.pop((topic, partition), None)

    def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(KafkaException):  # best effort on the way out
            self._producer.flush(timeout_s)
        self._index.close()


class _DlqIndex:
    """The source offsets the DLQ holds, by source partition, read incrementally: each DLQ partition is read
    from where the last look stopped up to its end now, by one consumer that joins no group and commits
    nothing. It holds the records still retained, minus those below a committed offset: a look lets go of those
    the DLQ partition's retention deleted since (of source partitions this writer does not own too, which no
    commit of its prunes).

    A look reads for at most ``read_budget_s`` (``timeout_s`` by default) and keeps what it read: a DLQ
    partition too large to read in one look is read over several (the publish that asked fails as a transient
    error and is retried), never again from its start."""

    def __init__(
        self, settings: KafkaSettings, topic: str, timeout_s: float, *, read_budget_s: float | None = None
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._timeout_s = timeout_s
        self._read_budget_s = timeout_s if read_budget_s is None else read_budget_s
        self._reader: Consumer | None = None
        self._read_to: dict[int, int] = {}  # per DLQ partition: the next offset to read
        # per source partition: each source offset the DLQ holds, with the DLQ offset of its newest copy
        self._sources: dict[tuple[str, int], dict[int, int]] = {}
        self._in_partition: dict[int, set[tuple[str, int]]] = {}  # per DLQ partition: the source partitions in it
        self._low: dict[int, int] = {}  # per DLQ partition: its log start when last pruned

    def offsets(self, topic: str, partition: int, dlq_partition: int, brokers: Callable[[], str]) -> set[int]:
        """What the DLQ holds now of ``topic[partition]`` (its records are all in ``dlq_partition``)."""
        self._catch_up(dlq_partition, brokers)
        return set(self._sources.get((topic, partition), ()))

    def forget_below(self, topic: str, partition: int, committed: int) -> None:
        known = self._sources.get((topic, partition))
        if known:
            self._sources[(topic, partition)] = {o: at for o, at in known.items() if o >= committed}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _catch_up(self, dlq_partition: int, brokers: Callable[[], str]) -> None:
        if self._reader is None:
            # a look runs on the writer's poll loop: a fetch left waiting at the broker for more records (500 ms
            # by default) would hold up the next look, and the loop with it
            config = {"bootstrap.servers": brokers(), "fetch.wait.max.ms": 10}
            self._reader = consumer(self._settings, f"{self._topic}.reader", **config)
        where = TopicPartition(self._topic, dlq_partition)
        low, high = watermarks(self._reader, where, timeout_s=self._timeout_s)
        self._drop_below(dlq_partition, low)
        start = max(self._read_to.get(dlq_partition, low), low)
        if start < high:
            self._reader.assign([TopicPartition(self._topic, dlq_partition, start)])
            try:
                self._read(dlq_partition, start, high)
            finally:
                self._reader.unassign()  # no fetching between looks
        self._read_to[dlq_partition] = max(start, high)

    def _drop_below(self, dlq_partition: int, low: int) -> None:
        """Let go of the source offsets whose newest copy in ``dlq_partition`` is below ``low``, its log start:
        retention deleted them. The log start moves a segment at a time: most looks find it where it was."""
        if low <= self._low.get(dlq_partition, 0):
            return
        self._low[dlq_partition] = low
        for source in self._in_partition.get(dlq_partition, ()):
            known = self._sources.get(source)
            if known:
                self._sources[source] = {o: at for o, at in known.items() if at >= low}

    def _read(self, partition: int, start: int, high: int) -> None:
        """Index the records ``start..high-1`` of the assigned partition. It runs on the writer's poll loop: every
        call asks for exactly what is left, so it returns as soon as that has arrived."""
        assert self._reader is not None
        deadline = time.monotonic() + self._read_budget_s
        next_offset = start
        sources = self._in_partition.setdefault(partition, set())
        while next_offset < high:
            batch = self._reader.consume(min(high - next_offset, 1_000), timeout=0.5)
            if not batch:  # offsets with no record (a gap) end before ``high`` too: the position says where it is
                (position,) = self._reader.position([TopicPartition(self._topic, partition)])
                next_offset = max(next_offset, position.offset)
            for message in batch:
                error = message.error()
                if error is not None:
                    raise KafkaException(error)
                source = source_coordinate(message)
                next_offset = int(message.offset() or 0) + 1
                if source is not None:
                    self._sources.setdefault(source[:2], {})[source[2]] = next_offset - 1
                    sources.add(source[:2])
            self._read_to[partition] = next_offset  # what lies below is indexed: a look cut short resumes here
            if next_offset < high and time.monotonic() > deadline:
                raise KafkaException(
                    f"reading {self._topic}[{partition}] up to offset {high} took over {self._read_budget_s:g}s"
                    f" (read to {next_offset}; the next look goes on from there)"
                )
