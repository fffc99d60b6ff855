"""The lake writer's run loop: consume → decode in bulk → buffer per partition → flush → commit.

This module is the loop and the state only it changes (buffers, pauses, retries, the assignment), which is
why it is longer than the others; every step that needs none of that state lives beside it:
``checkpoint.py`` (a partition's commit), ``writing.py`` (rows into files), ``continuity.py`` (where a
partition starts), ``recovery.py`` and ``quarantine.py`` (the crash-loop guard), ``guard.py`` (isolating a
decoder that raises).

Only a partition's checkpoint commits (``checkpoint.py``: write the Parquet files, wait for the partition's
DLQ records to be acknowledged, commit ``end`` synchronously, check the result). A transient failure (lake
or DLQ) drops the partition's buffer, seeks back to the committed position and pauses the partition with a
backoff, so memory stays bounded and nothing is skipped.

No failure of one record ends the process:

- A decoder that raises (any exception but a transient one, or a native panic) is retried on halves of the
  batch down to the records that make it raise; those go to the DLQ (``decoder_error``), the rest land
  (``guard.py``).
- A write that fails for another reason than a transient one is probed by bisection; rows that cannot be
  written go to the DLQ (``decoder_error``, stage ``write``), the rest are written and committed
  (``writing.py``). A failure no row explains is retried later like a transient one.
- A record that kills the process while it decodes (a native crash, or a decode longer than
  ``decode_timeout_s``) is found after the restart and quarantined (``decoder_crash``, ``quarantine.py``).

Where a partition starts: at the group's committed offset; a partition the group never committed starts at
the beginning of its log (a new group, a new topic: ``auto.offset.reset=earliest``). A committed offset
outside the log — retention deleted records this group never wrote, or the topic was recreated — is never
jumped over: when a partition is assigned its committed offset is checked against the log, and while it is
consumed a jump past the log start is caught, and either stops the writer with
:class:`OffsetsOutOfRangeError` (exit code 2, event ``writer.offsets_out_of_range``, nothing committed past
the gap). The records between the committed offset and the log start cannot be read from Kafka again; the
operator's way out: re-capture the affected tables (a Debezium incremental snapshot), then accept the gap by
moving the group to the log start — ``kafka-consumer-groups.sh --group <group> --topic <topic>:<partition>
--reset-offsets --to-earliest --execute`` with the writers stopped — and start them again.
(``auto.offset.reset=error`` would stop the fetch instead, but a fetch stopped that way cannot be restarted
through the batch consumer: librdkafka refuses to seek it, so a new group could not start at all.)

SIGTERM: polling stops, every buffer is flushed and committed, the group is left — within ``grace_s``, or
the process logs what it still held and exits non-zero (``services/common/signals.py``); what was not
committed is read again by the next owner, nothing is lost.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from services.common.debezium.records import DecodeFailure, DecodeResult, Reason
from services.common.errors import TransientError
from services.common.kafka import (
    BatchConsumer,
    Fetch,
    KafkaException,
    TopicPartition,
    batch_consumer,
    ensure_topics,
)
from services.common.kafka.message_columns import MessageBatch, batches_by_topic
from services.common.lake import Lake
from services.common.logging import get_logger
from services.common.metrics import WriterMetrics
from services.common.replay import replay_topic
from services.common.settings import Settings
from services.common.signals import Shutdown
from services.consumer.buffers import FlushPolicy, PartitionBuffer, PollSize, over_budget
from services.consumer.checkpoint import TP, Checkpoint, CheckpointOutcome
from services.consumer.continuity import Continuity
from services.consumer.dlq import DlqPublisher
from services.consumer.errors import OffsetsOutOfRangeError, StartUncheckedError, WriteFailedError
from services.consumer.evolution import CatalogEvolution
from services.consumer.faults import crash_if_marked, raise_if_marked
from services.consumer.guard import (
    decode_isolating,
    describe,
)
from services.consumer.prefetch import fetch_limits
from services.consumer.quarantine import (
    DecodeWatchdog,
    InflightNote,
    Quarantine,
    Range,
)
from services.consumer.recovery import CrashRecovery
from services.consumer.replayed import by_original_topic
from services.consumer.routing import Route, Router
from services.consumer.type_changes import TypeChangeCheck
from services.consumer.writing import RowWriter

__all__ = ["LakeWriter"]

log = get_logger(__name__)

_LAG_EVERY_S = 5.0
_DLQ_CONFIRM_S = 30.0
_METADATA_REFRESH_MS = 5_000  # how soon a newly created topic that matches the subscription is consumed
_PREFETCH_BACKOFF_MS = 20  # how soon librdkafka fetches again once a full prefetch queue has room (default 1 s)
OFFSETS_OUT_OF_RANGE_EXIT = 2


class LakeWriter:
    def __init__(
        self,
        settings: Settings,
        *,
        native: bool = True,
        lake: Lake,
        router: Router,
        metrics: WriterMetrics,
        shutdown: Shutdown,
        worker_id: str,
        evolution: CatalogEvolution | None = None,
        type_check: TypeChangeCheck | None = None,
    ) -> None:
        w = settings.writer
        self._settings = w
        self._all_settings = settings
        self._metrics = metrics
        self._shutdown = shutdown
        self._router = router
        self._evolution = evolution
        self._type_check = type_check
        self._writer = RowWriter(settings, lake, router, self._dead_letter)
        self._poll_size = PollSize.within(w.poll_batch, w.buffer_max_bytes)
        self._state_dir = settings.writer_state_dir() / w.group_id
        self._quarantine = Quarantine(self._state_dir)
        self._watchdog = DecodeWatchdog(w.decode_timeout_s)
        self._note: InflightNote | None = None
        self._policy = FlushPolicy(w.flush_max_rows, w.flush_max_bytes, w.flush_max_age_s)
        self._dlq = DlqPublisher(settings.kafka, w.group_id, worker_id)
        # records the DLQ tool replays for this group (services/consumer/replayed.py); only this group reads it
        self._replay_topic = replay_topic(w.group_id)
        ensure_topics(settings.kafka, [self._replay_topic])
        self._consumer: BatchConsumer = batch_consumer(
            settings.kafka,
            w.group_id,
            native=native,
            # memory and pace, which an operator's kafka.extra may still set otherwise
            tuning={
                **fetch_limits(w.buffer_max_bytes),
                # with the prefetch queue bounded, it is often full when librdkafka looks; by default it then
                # waits a whole second before fetching that partition again, and that wait, not the writer, set
                # the pace of a catch-up (BENCHMARKS.md, "Catch-up with a small buffer budget")
                "fetch.queue.backoff.ms": _PREFETCH_BACKOFF_MS,
                # the subscription is a pattern: a topic Debezium creates for a new table (or for the first
                # change of a fresh stack) joins it at the next metadata refresh, 5 minutes by default
                "topic.metadata.refresh.interval.ms": _METADATA_REFRESH_MS,
            },
            **{"client.id": worker_id, "enable.partition.eof": False},
        )
        self._checkpoint = Checkpoint(self._consumer, self._dlq, self._writer.write, dlq_timeout_s=_DLQ_CONFIRM_S)
        self._continuity = Continuity(settings, self._watermarks)
        self._recovery = CrashRecovery(
            settings, self._quarantine, self._replay_topic, self._dlq, self._dead_letter, _DLQ_CONFIRM_S
        )
        self._buffers: dict[TP, PartitionBuffer] = {}
        self._paused_until: dict[TP, float] = {}
        self._seek_owed: dict[TP, int] = {}  # paused partitions whose seek back failed: sought again before resuming
        self._attempts: dict[TP, int] = defaultdict(int)
        self._last_timestamp_ms: dict[TP, int] = {}
        self._assigned: set[TP] = set()
        self._next_start_check = 0.0  # when the starts the broker left unanswered are asked for again
        self._last_lag_at = 0.0
        self.last_poll_at = time.monotonic()
        self.polling = False
        self.examining = False  # quarantining after a crash: alive, though not polling yet

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.polling and bool(self._assigned)

    def run(self) -> int:
        self._note = InflightNote(self._state_dir)
        self._shutdown.on_overdue(self._report_left)
        try:
            self._recover_crashed()
            self._consumer.subscribe(
                [self._router.subscription(), self._replay_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            log.info("writer.started", group=self._settings.group_id, dlq=self._dlq.topic)
            while not self._shutdown.requested:
                self._poll_once()
            self._flush_all("shutdown")
        except OffsetsOutOfRangeError as exc:
            self._continuity.report(exc)
            return OFFSETS_OUT_OF_RANGE_EXIT
        finally:
            self.polling = False
            self._consumer.close()  # leaves the group: partitions move at once, not after a session timeout
            self._dlq.close()
            self._note.close()
            with contextlib.suppress(OSError):  # the group's state folder goes when nothing is left in it
                self._state_dir.rmdir()
        log.info("writer.stopped", reason=self._shutdown.signal_name)
        return 0

    def _poll_once(self) -> None:
        self._consume()
        self._flush_due()
        self._enforce_budget()
        self._resume_ready()
        self._check_unchecked_starts()
        self._report_gauges()

    # --- intake ---------------------------------------------------------------------------------

    def _consume(self) -> None:
        """One batch into the buffers. The batch (librdkafka's messages and the copy of their values) is
        released when this returns, before anything is flushed."""
        fetched = self._consumer.consume(num_messages=self._poll_size.next(), timeout=self._settings.poll_timeout_s)
        self.last_poll_at = time.monotonic()
        self.polling = True
        if not len(fetched):
            return
        self._poll_size.saw(len(fetched), fetched.values.nbytes)
        ingested_at_us = time.time_ns() // 1_000
        self._quarantine.refresh()
        assert self._note is not None
        self._note.note(_in_hand(fetched))  # until these are decoded: a crash now is traced to them
        for topic, batch in batches_by_topic(fetched).items():
            self._ingest(topic, batch, ingested_at_us)
        self._note.clear()

    def _ingest(self, topic: str, batch: MessageBatch, ingested_at_us: int) -> None:
        """One topic's records of a poll, decoded together (per-call costs are paid once, not per partition);
        each partition's rows go to its own buffer."""
        if topic == self._replay_topic:
            self._land_replayed(batch, ingested_at_us)
            return
        spans = batch.partition_spans()
        taken = self._started(topic, batch, [span for span in spans if self._taking((topic, span[0]))])
        if not taken:
            return  # fetched before the pause or the revoke: they will be read again
        if len(taken) < len(spans):
            batch = batch.take(np.concatenate([np.arange(a, b) for _, a, b in taken]))
            taken = batch.partition_spans()
        buffers = {p: self._take_in(topic, p, batch, a, b) for p, a, b in taken}
        ends = {p: int(batch.offsets[b - 1]) + 1 for p, _, b in taken}
        try:
            rows = self._rows(topic, self._quarantine.without_quarantined(topic, batch), ingested_at_us)
        except TransientError as exc:  # e.g. the schema registry is down: read these records again later
            for p, buffer in buffers.items():
                self._retry_later((topic, p), buffer, exc)
            return
        for p, buffer in buffers.items():
            for table in rows.get(p, []):
                buffer.add(table, ends[p])
            buffer.advance(ends[p])

    def _land_replayed(self, batch: MessageBatch, ingested_at_us: int) -> None:
        """Replayed records, written at once as rows of their original tables and committed (a replay is small
        and its partition's rows belong to many tables, so it is not buffered)."""
        topic = self._replay_topic
        for partition, start, stop in batch.partition_spans():
            tp = (topic, partition)
            if not self._taking(tp) or not self._started(topic, batch, [(partition, start, stop)]):
                continue
            part = batch.part(start, stop)
            buffer = self._take_in(topic, partition, part, 0, len(part))
            end = int(part.offsets[-1]) + 1
            records = self._quarantine.without_quarantined(topic, part)
            try:
                self._write_replayed(records, (partition, int(part.offsets[0]), end - 1), ingested_at_us)
                buffer.advance(end)
                committed, commit_s = self._checkpoint.settle(tp, buffer)
            except TransientError as exc:
                self._retry_later(tp, buffer, exc)
                continue
            self._metrics.commit_duration.observe(commit_s)
            if committed:
                self._attempts.pop(tp, None)

    def _write_replayed(self, part: MessageBatch, replay: tuple[int, int, int], ingested_at_us: int) -> None:
        originals, failures = by_original_topic(part)
        self._dead_letter(failures)
        for original_topic, records in originals.items():
            route = self._route(original_topic)
            table = f"{route.schema}.{route.table}"
            for partition, tables in self._rows(original_topic, records, ingested_at_us).items():
                for rows in tables:
                    try:
                        files = self._writer.write_replayed(route, partition, rows, replay)
                    except TransientError:
                        raise
                    except Exception as exc:  # retried like a transient failure: a replayed record is never skipped
                        raise WriteFailedError(f"writing replayed rows of {table}: {describe(exc)}") from exc
                    self._metrics.records_written.labels(table).inc(rows.num_rows)
                    self._metrics.lake_files_written.labels(table).inc(len(files))
                    log.info("writer.replayed", table=table, rows=rows.num_rows, files=[f.file.path for f in files])

    def _watermarks(self, tp: TP) -> tuple[int, int]:
        low, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        return int(low), int(high)

    def _taking(self, tp: TP) -> bool:
        return tp in self._assigned and tp not in self._paused_until

    def _started(
        self, topic: str, batch: MessageBatch, spans: list[tuple[int, int, int]]
    ) -> list[tuple[int, int, int]]:
        """Of ``spans`` (partition, first, stop in ``batch``), those whose partition's start is checked
        (:meth:`Continuity.check_starts`); while the broker does not answer, the others' records are read again
        later."""
        try:
            self._continuity.check_starts([(topic, partition) for partition, _, _ in spans])
        except StartUncheckedError as exc:
            waiting = set(exc.partitions)
            for partition, first, _ in spans:
                if (topic, partition) in waiting:
                    offset = int(batch.offsets[first])
                    self._retry_later(
                        (topic, partition), PartitionBuffer(topic, partition, start=offset, end=offset), exc
                    )
            return [span for span in spans if (topic, span[0]) not in waiting]
        return spans

    def _check_unchecked_starts(self) -> None:
        """Ask again, every ``retry_backoff_max_s``, for the starts the broker left unanswered, records or not: a
        partition whose committed offset retention overtook may bring none (the consumer resets it to the log
        start, where nothing may follow for long), and its loss is named as soon as the broker answers."""
        now = time.monotonic()
        if now < self._next_start_check:
            return
        self._next_start_check = now + self._settings.retry_backoff_max_s
        waiting = [tp for tp in self._continuity.unchecked() if tp in self._assigned]
        with contextlib.suppress(StartUncheckedError):  # still unanswered: their records wait, and so does this
            self._continuity.check_starts(waiting)

    def _rows(self, topic: str, batch: MessageBatch, ingested_at_us: int) -> dict[int, list[pa.Table]]:
        """Each partition's rows of ``batch`` (in offset order, in one table unless the decoder had to be
        isolated from some records); the records that yield none are DLQ'd, counted or skipped."""
        route = self._route(topic)
        if route.skip or not len(batch):
            return {}
        if route.decoder is None:
            failures = [
                DecodeFailure(batch.message(i), route.reason, route.detail)
                for i in np.flatnonzero(batch.values.is_valid().to_numpy(zero_copy_only=False)).tolist()
            ]
            self._dead_letter(failures)
            self._metrics.tombstones_skipped.labels(topic).inc(len(batch) - len(failures))
            return {}
        results = decode_isolating(lambda part: self._decode(topic, part, ingested_at_us), batch)
        if len(results) > 1:
            log.warning("writer.decoder_isolated", topic=topic, records=len(batch), parts=len(results))
        rows: dict[int, list[pa.Table]] = defaultdict(list)
        for result in results:
            self._dead_letter(result.failures)
            if result.tombstones:
                self._metrics.tombstones_skipped.labels(topic).inc(result.tombstones)
            for partition, table in result.rows_by_partition().items():
                rows[partition].append(table)
        return rows

    def _decode(self, topic: str, batch: MessageBatch, ingested_at_us: int) -> DecodeResult:
        """The decoded batch; columns new to the contract become its next version when evolution is on, and
        the batch is decoded again under it; values refused because a column changed type are schema
        mismatches."""
        decoder = self._router.route(topic).decoder  # the newest: an earlier part of the batch may have evolved it
        assert decoder is not None
        # the watchdog times the decoding alone: landing replayed rows, the DLQ and schema evolution do I/O that
        # may be slow without hanging, and a process ended there would be ended again after every restart
        with self._watchdog.watching():
            crash_if_marked(batch.values)
            raise_if_marked(batch.values)
            result = decoder.decode(topic, batch, ingested_at_us)
        unknown = result.unknown_columns()
        if unknown and self._evolution is not None and (evolved := self._evolution.evolve(decoder.contract, unknown)):
            self._router.adopt(evolved)
            decoder = self._router.route(topic).decoder
            assert decoder is not None
            with self._watchdog.watching():
                result = decoder.decode(topic, batch, ingested_at_us)
        if self._type_check is not None and result.failures:
            result.failures = self._type_check.relabel(decoder.contract, result.failures)
        return result

    def _take_in(self, topic: str, partition: int, batch: MessageBatch, start: int, stop: int) -> PartitionBuffer:
        """The partition's buffer (opened at its first offset in the batch if there is none), with the
        partition's records ``batch[start:stop]`` counted."""
        tp = (topic, partition)
        buffer = self._buffers.get(tp)
        first = int(batch.offsets[start])
        self._continuity.check_next(tp, first)
        if buffer is None:
            buffer = self._buffers[tp] = PartitionBuffer(topic, partition, start=first, end=first)
        self._continuity.expect(tp, int(batch.offsets[stop - 1]) + 1)
        self._metrics.records_consumed.labels(topic, str(partition)).inc(stop - start)
        self._last_timestamp_ms[tp] = int(batch.timestamps_ms[stop - 1])
        return buffer

    def _route(self, topic: str) -> Route:
        """The topic's route; a table without a contract is looked up in the catalog when evolution allows."""
        route = self._router.route(topic)
        if route.reason == Reason.UNKNOWN_TABLE and self._evolution is not None:
            discovered = self._evolution.discover(route.schema, route.table)
            if discovered is not None:
                self._router.adopt(discovered)
                route = self._router.route(topic)
            elif why := self._evolution.refusal(route.schema, route.table):
                route = replace(route, detail=f"no contract for table {route.schema}.{route.table}: {why}")
        return route

    def _dead_letter(self, failures: Sequence[DecodeFailure]) -> None:
        for failure in failures:
            if self._dlq.publish(failure):
                topic = str(failure.message.topic())
                self._metrics.records_dlq.labels(topic, failure.reason).inc()
                log.warning(
                    "writer.dead_lettered",
                    topic=topic,
                    partition=failure.message.partition(),
                    offset=failure.message.offset(),
                    reason=failure.reason,
                    detail=failure.detail[:300],
                )

    # --- checkpoints ----------------------------------------------------------------------------

    def _flush_due(self) -> None:
        now = time.monotonic()
        self._flush([(tp, reason) for tp, buffer in self._buffers.items() if (reason := self._policy.due(buffer, now))])

    def _enforce_budget(self) -> None:
        """Flush the biggest buffers, in one checkpoint round, until the rest is within the byte budget (a failed
        flush frees its buffer too)."""
        self._flush([(tp, "budget") for tp in over_budget(self._buffers, self._settings.buffer_max_bytes)])

    def _flush_all(self, reason: str) -> None:
        self._flush([(tp, reason) for tp in self._buffers])

    def _flush(self, due: list[tuple[TP, str]]) -> None:
        """The partitions' checkpoint, one commit for all (``checkpoint.py``); a partition that failed with a
        transient error is sought back and paused."""
        pending = [(tp, reason) for tp, reason in due if self._buffers[tp].pending]
        if not pending:
            return
        outcomes = self._checkpoint.run([(tp, self._buffers[tp]) for tp, _ in pending])
        commit_s = None
        for tp, reason in pending:
            outcome = outcomes[tp]
            if isinstance(outcome, TransientError):
                self._retry_later(tp, self._buffers[tp], outcome)
                continue
            self._flushed(tp, reason, outcome)
            commit_s = outcome.commit_s
        if commit_s is not None:
            self._metrics.commit_duration.observe(commit_s)

    def _flushed(self, tp: TP, reason: str, outcome: CheckpointOutcome) -> None:
        """Metrics and log of one partition's checkpoint."""
        route = self._router.route(tp[0])
        table = f"{route.schema}.{route.table}"
        for file in outcome.written:
            self._metrics.lake_files_written.labels(table).inc()
            self._metrics.lake_bytes_written.labels(table).inc(file.file.size)
        if outcome.rows is not None:
            self._metrics.records_written.labels(table).inc(outcome.rows)
            self._metrics.flush_records.labels(table).observe(outcome.rows)
            self._metrics.flush_duration.labels(table).observe(outcome.write_s)
        buffer = self._buffers[tp]
        log.debug(
            "writer.flushed", topic=tp[0], partition=tp[1], reason=reason, end=buffer.end, files=len(outcome.written)
        )
        if outcome.committed:
            self._attempts.pop(tp, None)

    def _report_left(self) -> None:
        """What this writer still held when the grace period ran out (called from the shutdown timer)."""
        with contextlib.suppress(RuntimeError):  # the loop may change the buffers meanwhile: best effort
            held = {f"{t}[{p}]": (b.start, b.end) for (t, p), b in list(self._buffers.items()) if b.pending}
            log.error(
                "writer.shutdown_overdue",
                grace_s=self._settings.grace_s,
                uncommitted={k: f"{start}..{end - 1}" for k, (start, end) in held.items()},
                assigned=len(self._assigned),
                note="not committed: the next owner of these partitions reads them again",
            )

    # --- the crash-loop guard -------------------------------------------------------------------

    def _recover_crashed(self) -> None:
        """Quarantine the records that killed earlier writers of this group here while they decoded."""
        self.examining = True
        try:
            self._recovery.run(self._state_dir)
        finally:
            self.examining = False
            self.last_poll_at = time.monotonic()

    def _retry_later(self, tp: TP, buffer: PartitionBuffer, exc: Exception) -> None:
        """Drop what was buffered, seek back to the committed position and pause with backoff."""
        self._attempts[tp] += 1
        delay = min(self._settings.retry_backoff_max_s, self._settings.retry_backoff_s * 2 ** (self._attempts[tp] - 1))
        self._consumer.pause([TopicPartition(tp[0], tp[1])])
        self._seek_owed[tp] = buffer.start
        self._seek_back(tp)
        self._buffers[tp] = PartitionBuffer(tp[0], tp[1], start=buffer.start, end=buffer.start)
        self._continuity.expect(tp, buffer.start)
        self._paused_until[tp] = time.monotonic() + delay
        log.warning(
            "writer.retry_later",
            topic=tp[0],
            partition=tp[1],
            offset=buffer.start,
            attempt=self._attempts[tp],
            delay_s=round(delay, 2),
            error=str(exc),
        )

    def _seek_back(self, tp: TP) -> bool:
        """Seek a paused partition back to the offset its retry starts at. A seek that fails leaves it owed:
        resumed without it, the partition would go on after the records its retry dropped."""
        try:
            self._consumer.seek(TopicPartition(tp[0], tp[1], self._seek_owed[tp]))
        except KafkaException as exc:  # e.g. mid-rebalance; if the partition went, forgetting it clears the debt
            log.warning("writer.seek_failed", topic=tp[0], partition=tp[1], error=str(exc))
            return False
        del self._seek_owed[tp]
        return True

    def _resume_ready(self) -> None:
        now = time.monotonic()
        ready = [tp for tp, until in self._paused_until.items() if until <= now]
        for tp in [tp for tp in ready if tp in self._seek_owed and not self._seek_back(tp)]:
            ready.remove(tp)
            self._paused_until[tp] = now + self._settings.retry_backoff_s  # still owed: try again, still paused
        if ready:
            self._consumer.resume([TopicPartition(t, p) for t, p in ready])
            for tp in ready:
                del self._paused_until[tp]

    # --- rebalances -----------------------------------------------------------------------------

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # raises before any of their records
        self._continuity.check_assigned([(p.topic, p.partition) for p in partitions])
        # a partition paused for a retry when it was revoked is still paused when it comes back (librdkafka keeps
        # the application's pause across assignments), and its retry was forgotten: it would never be read again
        self._consumer.resume([TopicPartition(p.topic, p.partition) for p in partitions])
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self._metrics.rebalances.labels("assign").inc()
        log.info("writer.assigned", partitions=[f"{p.topic}[{p.partition}]" for p in partitions])

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        """Flush and commit what we hold of the revoked partitions, then let them go."""
        self._metrics.rebalances.labels("revoke").inc()
        revoked = [(p.topic, p.partition) for p in partitions]
        self._flush([(tp, "revoke") for tp in revoked if tp in self._buffers and tp not in self._paused_until])
        for tp in revoked:
            self._forget(tp)
        log.info("writer.revoked", partitions=[f"{p.topic}[{p.partition}]" for p in partitions])

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        """Someone else may own them already: drop the buffers without committing."""
        self._metrics.rebalances.labels("lost").inc()
        for p in partitions:
            self._forget((p.topic, p.partition))
        log.warning("writer.lost", partitions=[f"{p.topic}[{p.partition}]" for p in partitions])

    def _forget(self, tp: TP) -> None:
        self._buffers.pop(tp, None)
        self._paused_until.pop(tp, None)
        self._seek_owed.pop(tp, None)
        self._attempts.pop(tp, None)
        self._last_timestamp_ms.pop(tp, None)
        self._continuity.forget(tp)
        self._assigned.discard(tp)
        self._dlq.drop(*tp)
        self._metrics.forget_partition(self._settings.group_id, tp[0], tp[1])

    # --- gauges ---------------------------------------------------------------------------------

    def _report_gauges(self) -> None:
        self._metrics.buffered_bytes.set(sum(b.bytes for b in self._buffers.values()))
        self._metrics.paused_partitions.set(len(self._paused_until))
        now = time.monotonic()
        if now - self._last_lag_at < _LAG_EVERY_S:
            return
        self._last_lag_at = now
        group = self._settings.group_id
        for tp in self._assigned:
            try:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                buffer = self._buffers.get(tp)
                position = buffer.end if buffer else self._consumer.position([TopicPartition(*tp)])[0].offset
            except KafkaException:
                continue
            if high < 0:
                continue
            lag = max(0, high - (position if position >= 0 else low))
            self._metrics.consume_lag_records.labels(group, tp[0], str(tp[1])).set(lag)
            last_ms = self._last_timestamp_ms.get(tp, 0)
            seconds = max(0.0, time.time() - last_ms / 1000) if lag and last_ms > 0 else 0.0
            self._metrics.consume_lag_seconds.labels(group, tp[0], str(tp[1])).set(seconds)


def _in_hand(fetched: Fetch) -> list[Range]:
    """``(topic, partition, first, last)`` of every partition in a fetch."""
    spans: dict[TP, tuple[int, int]] = {}
    for topic, partition, start, stop in fetched.runs:
        first, last = int(fetched.offsets[start]), int(fetched.offsets[stop - 1])
        known = spans.get((topic, partition))
        spans[(topic, partition)] = (first, last) if known is None else (min(known[0], first), max(known[1], last))
    return [(topic, partition, first, last) for (topic, partition), (first, last) in spans.items()]
