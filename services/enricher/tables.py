"""Reads the customers and facilities topics in full into the table store, and says how far they are known.

Every instance reads every partition (a global table: the input needs no co-partitioning with them), with a
plain assigned consumer that joins no group; where it has read to is kept in the store with the rows. A
record that cannot be used goes to the enricher's DLQ, acknowledged before the store's position passes it.

The watermark of a table side is the LSN below which no version of it can still arrive: the smallest, over
its partitions, of the greatest LSN read there — except that a partition read up to its end counts as far
as Debezium's heartbeat has gone (``<prefix>.cdcflow.heartbeat``, written every 10 s even when the tables
are idle), since the connector produces in WAL order. The caveat: the connector's producer acknowledges
partitions independently, so a version can in principle reach its partition after a later heartbeat has
reached its own; the bounded wait does not cover that case (docs/architecture.md, "The enricher").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.common.debezium.records import DecodeFailure
from services.common.kafka import Consumer, KafkaException, Message, TopicPartition
from services.common.logging import get_logger
from services.common.metrics import EnricherMetrics
from services.enricher.events import Rejected, TableChange, TableTruncate, decode_lsn, decode_table_change
from services.enricher.store import Position, TableStore

if TYPE_CHECKING:
    from services.consumer.dlq import DlqPublisher

__all__ = ["TableReader", "TableTopic"]

log = get_logger(__name__)
_OFFSET_BEGINNING = -2


@dataclass(frozen=True, slots=True)
class TableTopic:
    topic: str
    table: str
    key_column: str


class TableReader:
    """Keeps the store up to date with the table topics; :attr:`ready` once they are read to their start ends."""

    def __init__(
        self,
        client: Consumer,
        store: TableStore,
        tables: list[TableTopic],
        heartbeat_topic: str,
        metrics: EnricherMetrics,
        *,
        dlq: DlqPublisher | None = None,
        dlq_timeout_s: float = 30.0,
    ) -> None:
        self._client = client
        self._dlq = dlq  # where a table record that cannot be used goes, before the store moves past it
        self._dlq_timeout_s = dlq_timeout_s
        self._store = store
        self._tables = {t.topic: t for t in tables}
        self._heartbeat = heartbeat_topic
        self._metrics = metrics
        self._positions: dict[tuple[str, int], Position] = {}
        self._start_ends: dict[tuple[str, int], int] = {}
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def start(self, timeout_s: float = 30.0) -> None:
        """Assign every partition from where the store has read it (the start when it has not)."""
        stored = self._store.positions()
        metadata = self._client.list_topics(timeout=timeout_s).topics
        assignment = []
        for topic in [*self._tables, self._heartbeat]:
            if topic not in metadata:
                if topic == self._heartbeat:
                    log.warning("enricher.no_heartbeat_topic", topic=topic)
                    continue
                raise KafkaException(f"table topic {topic} does not exist")
            for partition in sorted(metadata[topic].partitions):
                tp = (topic, partition)
                low, self._start_ends[tp] = self._client.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout_s
                )
                position = stored.get(tp, Position(0, 0))
                # records below the log start are gone (retention): nothing there is left to read, and a partition
                # whose records all went counts as read to its end
                self._positions[tp] = Position(max(position.next_offset, low), position.max_lsn)
                start = self._positions[tp].next_offset if tp in stored else _OFFSET_BEGINNING
                assignment.append(TopicPartition(topic, partition, start))
        self._client.assign(assignment)
        self._check_ready()
        log.info("enricher.tables_assigned", partitions=len(assignment), resumed=len(stored))

    def poll(self, max_records: int, timeout_s: float) -> int:
        """Read what is there (up to ``max_records``) into the store, in one store transaction."""
        messages = self._client.consume(num_messages=max_records, timeout=timeout_s)
        if not messages:
            self._check_ready()
            return 0
        changes: list[TableChange | TableTruncate] = []
        rejected: list[DecodeFailure] = []
        touched: dict[tuple[str, int], Position] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                raise KafkaException(error)
            topic, partition, offset = str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
            lsn = self._read(topic, message, changes, rejected)
            old = touched.get((topic, partition), self._positions[(topic, partition)])
            touched[(topic, partition)] = Position(offset + 1, max(old.max_lsn, lsn or 0))
        self._dead_letter(rejected)
        stored = self._store.apply(changes, touched)
        self._positions.update(touched)
        for table, new in stored.items():
            self._metrics.table_changes.labels(table=table, outcome="stored").inc(new)
            known = sum(1 for c in changes if c.table == table) - new
            self._metrics.table_changes.labels(table=table, outcome="known").inc(known)
        self._check_ready()
        return len(messages)

    def _read(
        self, topic: str, message: Message, changes: list[TableChange | TableTruncate], rejected: list[DecodeFailure]
    ) -> int | None:
        """Decode one record; returns its LSN (None for a tombstone or a record that cannot be used)."""
        if topic == self._heartbeat:
            return decode_lsn(message.value())
        table = self._tables[topic]
        change = decode_table_change(table.table, table.key_column, message.value())
        if isinstance(change, Rejected):
            if change.reason != "tombstone":
                self._metrics.table_changes.labels(table=table.table, outcome="rejected").inc()
                log.error("enricher.table_record_rejected", topic=topic, reason=change.reason, detail=change.detail)
                rejected.append(DecodeFailure(message, change.reason, change.detail, stage="enrich"))
            return None
        changes.append(change)
        return change.lsn

    def _dead_letter(self, rejected: list[DecodeFailure]) -> None:
        """Every rejected record of a poll acknowledged by the DLQ before the store's position passes it: a crash
        in between reads it again, and the publisher does not send one it already sent."""
        if self._dlq is None or not rejected:
            return
        for failure in rejected:
            self._dlq.publish(failure)
        for topic, partition in sorted({(str(f.message.topic()), int(f.message.partition() or 0)) for f in rejected}):
            self._dlq.confirm(topic, partition, self._dlq_timeout_s)

    def _check_ready(self) -> None:
        if not self._ready and all(self._positions[tp].next_offset >= end for tp, end in self._start_ends.items()):
            self._ready = True
            log.info("enricher.tables_ready", partitions=len(self._start_ends))

    def watermark(self) -> int:
        """The smaller of the table sides' watermarks (see the module docstring)."""
        heartbeat = max((p.max_lsn for (t, _), p in self._positions.items() if t == self._heartbeat), default=0)
        marks = {}
        for topic, table in self._tables.items():
            marks[table.table] = min(
                (
                    self._partition_mark(tp, position, heartbeat)
                    for tp, position in self._positions.items()
                    if tp[0] == topic
                ),
                default=heartbeat,
            )
            self._metrics.watermark_lsn.labels(table=table.table).set(marks[table.table])
        return min(marks.values(), default=heartbeat)

    def _partition_mark(self, tp: tuple[str, int], position: Position, heartbeat: int) -> int:
        _, high = self._client.get_watermark_offsets(TopicPartition(*tp), cached=True)
        if high < 0:
            high = self._start_ends[tp]
        return max(position.max_lsn, heartbeat) if position.next_offset >= high else position.max_lsn

    def wait_ready(self, stopping: Callable[[], bool], max_records: int) -> bool:
        """Read until :attr:`ready`; False when the wait was cut short by shutdown."""
        started = time.monotonic()
        while not self._ready:
            if stopping():
                return False
            self.poll(max_records, 0.5)
        log.info("enricher.tables_caught_up", seconds=round(time.monotonic() - started, 3))
        return True
