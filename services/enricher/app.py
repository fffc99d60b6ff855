"""The enricher's loop: read transactions, hold them until the table sides are known, emit exactly once.

Every Kafka transaction holds the enriched records, the DLQ records and the input offsets they account for
(``send_offsets_to_transaction``), so a crash at any moment leaves either all of them or none: the records
of an aborted transaction are invisible to ``read_committed`` readers and their inputs are read again.

The transactional id is ``<group>.<instance id>``, stable across restarts of one instance: a restarted
instance aborts what its predecessor left open, and a second process started with the same id fences the
first (every later call of the first fails; it exits with :data:`FENCED_EXIT`). Across rebalances the group
metadata sent with the offsets fences a member that lost its partitions.

Changes held when partitions are revoked, lost, or the process stops are not emitted: their offsets are not
committed, so whoever owns the partition next reads them again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from services.common.kafka import (
    MAX_RECORD_BYTES,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
    TransactionalProducer,
    is_fenced,
)
from services.common.logging import get_logger
from services.common.metrics import EnricherMetrics
from services.common.replay import VALUE_OMITTED
from services.common.settings import EnricherSettings
from services.common.signals import Shutdown
from services.consumer.dlq import dlq_partition
from services.enricher.events import Rejected, TransactionChange, decode_transaction
from services.enricher.join import HoldQueue, Released, encode, enriched_value, join_side
from services.enricher.store import TableStore
from services.enricher.tables import TableReader

__all__ = ["FENCED_EXIT", "Enricher", "Topics"]

log = get_logger(__name__)

FENCED_EXIT = 2
"""The exit code of an instance fenced by another with the same transactional id."""

TP = tuple[str, int]
Header = tuple[str, str | bytes | None]
TOO_LARGE = "too_large"
ENRICHED_MAX_BYTES = MAX_RECORD_BYTES - 256
"""The largest enriched record (key and value) the enricher produces: a topic of cdcflow's takes
:data:`MAX_RECORD_BYTES` a record with the record batch around it (under 100 bytes for one record without
headers). A larger one would fail its transaction every time; its change goes to the DLQ instead."""
_JOINED_OR_NONE = frozenset({"joined", "none"})  # the join states not counted as unjoined


class Topics:
    """The topics of one enricher: its input, its output and its DLQ (with its partition count)."""

    def __init__(self, input_topic: str, output_topic: str, dlq_topic: str, dlq_partitions: int) -> None:
        self.input = input_topic
        self.output = output_topic
        self.dlq = dlq_topic
        self.dlq_partitions = dlq_partitions


class Enricher:
    """One instance: a member of the input's consumer group with its own transactional producer."""

    def __init__(
        self,
        settings: EnricherSettings,
        *,
        topics: Topics,
        store: TableStore,
        tables: TableReader,
        client: Consumer,
        producer: TransactionalProducer,
        metrics: EnricherMetrics,
        shutdown: Shutdown,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._store = store
        self._tables = tables
        self._client = client
        self._producer = producer
        self._metrics = metrics
        self._shutdown = shutdown
        self._clock = clock
        self._held = HoldQueue(settings.max_wait_s)
        self._consumed: dict[TP, int] = {}  # next offset after the last record read, per input partition
        self._committed: dict[TP, int] = {}
        self._in_transaction = False
        self._records_in_transaction = 0
        self._transaction_began = 0.0
        self._subscribed = False
        self._input_paused = False
        self.last_poll_at = clock()

    @property
    def ready(self) -> bool:
        return self._tables.ready and self._subscribed

    def run(self) -> int:
        """Until shutdown: 0 after a clean drain, :data:`FENCED_EXIT` when another instance took over."""
        try:
            self._producer.init()
            self._tables.start()
            if not self._tables.wait_ready(lambda: self._shutdown.requested, self._settings.poll_batch):
                return 0
            self._client.subscribe(
                [self._topics.input], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            self._subscribed = True
            while not self._shutdown.requested:
                self._step()
            self._drain()
            return 0
        except KafkaException as exc:
            if not is_fenced(exc):
                raise
            log.error("enricher.fenced", error=str(exc))
            return FENCED_EXIT
        finally:
            # a static member does not leave its group on close: its partitions wait for it (a restart takes them
            # back at once) until its session times out
            self._client.close()
            self._producer.close()

    def _step(self) -> None:
        s = self._settings
        room = self._room()
        # with no room the input is paused, and the wait goes to the tables: their progress releases what is
        # held. The input's call still serves the group (a member that stops calling leaves it).
        self._tables.poll(s.poll_batch, 0 if room else s.poll_timeout_s)
        messages = self._client.consume(
            num_messages=min(s.poll_batch, max(room, 1)), timeout=s.poll_timeout_s if room else 0
        )
        self.last_poll_at = now = self._clock()  # what one poll returned is held from the same moment
        consumed: Counter[TP] = Counter()
        for message in messages:
            consumed[self._take(message, now)] += 1
        for (topic, partition), count in consumed.items():  # one metric update per partition, not per record
            self._metrics.records_consumed.labels(topic=topic, partition=str(partition)).inc(count)
        self._release()
        self._metrics.held_records.set(len(self._held))
        if self._due():
            self._commit()

    def _room(self) -> int:
        """How many more changes the input may bring now: 0 once ``max_held`` wait for the tables. The input is
        paused then, and resumes once half of them went out."""
        held, limit = len(self._held), self._settings.max_held
        if held >= limit or (self._input_paused and held > limit // 2):
            self._client.pause(self._client.assignment())  # each step: partitions assigned since come unpaused
            if not self._input_paused:
                self._input_paused = True
                log.warning("enricher.input_paused", held=held, max_held=limit)
            return 0
        if self._input_paused:
            self._client.resume(self._client.assignment())
            self._input_paused = False
            log.info("enricher.input_resumed", held=held)
        return limit - held

    def _take(self, message: Message, now: float) -> TP:
        """Hold a change, or dead-letter what cannot be decoded; returns its partition."""
        error = message.error()
        if error is not None:
            raise KafkaException(error)
        topic, partition, offset = str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
        self._consumed[(topic, partition)] = offset + 1
        change = decode_transaction(topic, partition, offset, message.key(), message.value())
        if isinstance(change, Rejected):
            if change.reason != "tombstone":  # Debezium's tombstone after a delete: the delete itself went out
                self._dead_letter(message, change)
        else:
            self._held.add(change, now)
        return topic, partition

    def _release(self) -> None:
        produced: Counter[str] = Counter()
        records = []
        for each in self._held.release(self._tables.watermark(), self._clock()):
            key, value = self._enriched(each)
            size = len(key or b"") + len(value)
            if size > ENRICHED_MAX_BYTES:
                self._dead_letter_too_large(each.change, size)
                continue
            records.append((key, value))
            produced[each.released_by] += 1
        if records:
            self._begin()
            # the records' timestamp is when they were produced: a replay of old changes must not age out at once
            self._producer.produce_many(self._topics.output, records)
            self._records_in_transaction += len(records)
        for released_by, count in produced.items():
            self._metrics.records_produced.labels(released_by=released_by).inc(count)

    def _enriched(self, released: Released) -> tuple[bytes | None, bytes]:
        """The output record of a released change: its key and its joined value."""
        change = released.change
        customer = join_side(self._store.as_of, "customers", change.customer_key, change.lsn)
        facility = join_side(self._store.as_of, "facilities", change.facility_key, change.lsn)
        if customer.state not in _JOINED_OR_NONE:
            self._metrics.sides_unjoined.labels(side="customer", state=customer.state).inc()
        if facility.state not in _JOINED_OR_NONE:
            self._metrics.sides_unjoined.labels(side="facility", state=facility.state).inc()
        return change.key, encode(enriched_value(released, customer, facility))

    def _dead_letter(self, message: Message, rejected: Rejected) -> None:
        """An input record that cannot be decoded, as it was read."""
        _, timestamp = message.timestamp()
        coordinate = (str(message.topic()), int(message.partition() or 0), int(message.offset() or 0))
        record = (message.key(), message.value(), [*(message.headers() or [])])
        self._to_dlq(coordinate, timestamp, record, error=("DecodeError", rejected.reason, rejected.detail))

    def _dead_letter_too_large(self, change: TransactionChange, size: int) -> None:
        """A change whose enriched record no topic of cdcflow's takes. Its value stays in the input topic, at the
        coordinates the headers give: left out here, as the lake writer's DLQ leaves out a value too large."""
        detail = (
            f"the enriched record of this change is {size} bytes, more than the {ENRICHED_MAX_BYTES} an output "
            "record may take; the change's own value is in the input topic at the cdcflow.source.* coordinates"
        )
        omitted: list[Header] = [(VALUE_OMITTED, "true")]
        record = (change.key, b"", omitted)
        coordinate = (change.topic, change.partition, change.offset)
        self._to_dlq(coordinate, -1, record, error=("RecordTooLargeError", TOO_LARGE, detail))

    def _to_dlq(
        self,
        coordinate: tuple[str, int, int],
        timestamp: int,
        record: tuple[bytes | None, bytes | None, list[Header]],
        *,
        error: tuple[str, str, str],
    ) -> None:
        """``record`` (key, value, headers) into the DLQ, with ``error`` (class, reason, detail) and where it was
        read (``timestamp``: its Kafka timestamp, -1 when unknown) in headers."""
        (topic, partition, offset), (key, value, headers), (error_class, reason, detail) = coordinate, record, error
        headers = [
            *headers,
            ("cdcflow.error.class", error_class),
            ("cdcflow.error.reason", reason),
            ("cdcflow.error.message", detail[:2_000]),
            ("cdcflow.error.stage", "enrich"),
            ("cdcflow.error.time", str(time.time_ns() // 1_000_000)),
            ("cdcflow.source.topic", topic),
            ("cdcflow.source.partition", str(partition)),
            ("cdcflow.source.offset", str(offset)),
            ("cdcflow.source.timestamp", str(timestamp)),
        ]
        self._begin()
        self._producer.produce(
            self._topics.dlq,
            key=key,
            value=value,
            headers=headers,
            partition=dlq_partition(topic, partition, self._topics.dlq_partitions),
        )
        self._records_in_transaction += 1
        self._metrics.records_dlq.labels(topic=topic, reason=reason).inc()
        log.error("enricher.dead_lettered", topic=topic, partition=partition, offset=offset, reason=reason)

    def _begin(self) -> None:
        if not self._in_transaction:
            self._producer.begin()
            self._in_transaction = True
            self._records_in_transaction = 0
            self._transaction_began = self._clock()

    def _offsets(self) -> dict[TP, int]:
        """What may be committed per partition: up to the first held change, else all that was read."""
        held = self._held.first_offsets()
        return {tp: held.get(tp, consumed) for tp, consumed in self._consumed.items()}

    def _due(self) -> bool:
        if not (self._in_transaction or self._moved()):
            return False
        if self._records_in_transaction >= self._settings.commit_max_records:
            return True
        began = self._transaction_began if self._in_transaction else self.last_poll_at
        return not self._in_transaction or self._clock() - began >= self._settings.commit_interval_s

    def _commit(self) -> None:
        """Commit what was produced together with the input offsets it accounts for."""
        offsets = {tp: o for tp, o in self._offsets().items() if self._committed.get(tp) != o}
        started = time.perf_counter()
        try:
            self._begin()
            if offsets:
                self._producer.send_offsets(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    self._client.consumer_group_metadata(),
                )
            self._producer.commit()
        except KafkaException as exc:
            if is_fenced(exc) or not _abortable(exc):
                raise
            log.warning("enricher.transaction_aborted", error=str(exc))
            self._abort_and_rewind()
            return
        self._in_transaction = False
        self._committed.update(offsets)
        self._metrics.transaction_duration.observe(time.perf_counter() - started)
        self._metrics.transactions.labels(outcome="committed").inc()

    def _moved(self) -> bool:
        return any(self._committed.get(tp) != offset for tp, offset in self._offsets().items())

    def _abort_and_rewind(self, lost: frozenset[TP] = frozenset()) -> None:
        """Abort the open transaction and read every assigned partition again from its committed offset."""
        if self._in_transaction:
            try:
                self._producer.abort()
            finally:
                self._in_transaction = False
            self._metrics.transactions.labels(outcome="aborted").inc()
        self._held.forget()
        self._consumed.clear()
        self._committed.clear()
        assigned = [tp for tp in self._client.assignment() if (tp.topic, tp.partition) not in lost]
        if assigned:
            for tp in self._client.committed(assigned, timeout=30):
                self._client.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -2))
            log.info("enricher.rewound", partitions=len(assigned))

    def _drain(self) -> None:
        """SIGTERM: emit what the watermark allows, commit, and leave the group (in ``run``'s ``finally``)."""
        self._release()
        if self._in_transaction or self._moved():
            self._commit()
        log.info("enricher.drained", held_not_emitted=len(self._held))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._held.forget(gone)
        for tp in gone:
            self._consumed.pop(tp, None)
            self._committed.pop(tp, None)

    def _on_assign(self, _client: Any, partitions: list[TopicPartition]) -> None:
        # a partition paused when it was revoked or lost is still paused when it comes back (librdkafka keeps the
        # application's pause across assignments): resumed here, it is paused again by the next step if the
        # input still has no room
        self._client.resume(partitions)
        log.info("enricher.assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_revoke(self, _client: Any, partitions: list[TopicPartition]) -> None:
        """Commit what is done before the partitions go to another member; what is held is read again there."""
        if self._in_transaction or self._moved():
            self._commit()
        self._forget(partitions)
        log.info("enricher.revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_lost(self, _client: Any, partitions: list[TopicPartition]) -> None:
        """Another member may own them already: commit nothing more, start again from the committed offsets."""
        log.warning("enricher.lost", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])
        self._forget(partitions)
        self._abort_and_rewind(frozenset((tp.topic, tp.partition) for tp in partitions))


def _abortable(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return bool(getattr(error, "txn_requires_abort", lambda: False)())
