"""Where a partition starts, and that it goes on without a gap.

A committed offset outside the log — retention deleted records this group never wrote, or the topic was
recreated — is never jumped over: it is checked when the partition is assigned, and a jump past the log start
while it is consumed is caught (the writer's module docstring, ``app.py``, has the whole story and the
operator's way out).
"""

from __future__ import annotations

from collections.abc import Callable

from services.common.kafka import KafkaException, admin_client
from services.common.kafka.offsets import Watermarks, committed_offsets, log_bounds
from services.common.logging import get_logger
from services.common.settings import Settings
from services.consumer.checkpoint import TP
from services.consumer.errors import OffsetsOutOfRangeError, StartUncheckedError

__all__ = ["Continuity"]

log = get_logger(__name__)

_OFFSETS_TIMEOUT_S = 10.0

WatermarkLookup = Callable[[TP], tuple[int, int]]
"""``(log start, log end)`` of a partition, as the consumer last saw them."""


class Continuity:
    """The offset each partition's next record must have; raises :class:`OffsetsOutOfRangeError` on a loss."""

    def __init__(self, settings: Settings, watermarks: WatermarkLookup) -> None:
        self._settings = settings
        self._group = settings.writer.group_id
        self._watermarks = watermarks
        self._expected: dict[TP, int] = {}
        self._unchecked: set[TP] = set()  # assigned while the broker did not answer the start check

    def check_assigned(self, partitions: list[TP]) -> None:
        """Each newly assigned partition's committed offset must still be in its log. When the broker does not
        answer, the partitions stay unchecked: :meth:`check_starts` asks again before any of their records."""
        try:
            self._check(partitions)
        except (KafkaException, TimeoutError) as exc:  # a broker hiccup: asked again at the first record
            log.warning("writer.start_check_failed", partitions=len(partitions), error=str(exc))
            self._unchecked.update(partitions)

    def unchecked(self) -> list[TP]:
        """The partitions whose start check the broker left unanswered so far."""
        return sorted(self._unchecked)

    def check_starts(self, partitions: list[TP]) -> None:
        """Before the first records of ``partitions``: the start check of those whose check at assignment
        failed, one request for them all. Raises :class:`StartUncheckedError` (naming them) while the broker
        still does not answer, OffsetsOutOfRangeError on a loss."""
        waiting = [tp for tp in partitions if tp in self._unchecked]
        if not waiting:
            return
        try:
            self._check(waiting)
        except (KafkaException, TimeoutError) as exc:
            raise StartUncheckedError(waiting, str(exc)) from None
        log.info("writer.start_checked", partitions=[f"{topic}[{partition}]" for topic, partition in waiting])

    def _check(self, partitions: list[TP]) -> None:
        starts = _starts(self._settings, self._group, partitions)
        self._unchecked.difference_update(partitions)
        lost: list[tuple[str, int, int, int, int]] = []
        unbounded = 0
        for tp, (committed, bounds) in starts.items():
            if committed < 0:
                continue  # never committed: librdkafka starts it at the beginning of its log
            if bounds is None:
                unbounded += 1
            elif committed < bounds.start or committed > bounds.end:
                lost.append((tp[0], tp[1], committed, bounds.start, bounds.end))
            self._expected[tp] = committed
        if unbounded:
            log.warning("writer.start_check_failed", partitions=unbounded, error="no log offsets in time")
        if lost:
            raise OffsetsOutOfRangeError(lost)

    def check_next(self, tp: TP, first: int) -> None:
        """A partition that resumes past the offset it was expected at, below the log start, lost records to
        retention while it was behind: librdkafka jumped to the log start (a gap above it is a transaction
        marker or compaction, not a loss)."""
        expected = self._expected.get(tp)
        if expected is None or first <= expected:
            return
        low, high = self._watermarks(tp)
        if expected < low:
            raise OffsetsOutOfRangeError([(tp[0], tp[1], expected, low, high)])

    def expect(self, tp: TP, offset: int) -> None:
        self._expected[tp] = offset

    def forget(self, tp: TP) -> None:
        self._expected.pop(tp, None)
        self._unchecked.discard(tp)

    def report(self, error: OffsetsOutOfRangeError) -> None:
        for topic, partition, committed, low, high in error.lost:
            log.error(
                "writer.offsets_out_of_range",
                topic=topic,
                partition=partition,
                committed=committed,
                log_start=low,
                log_end=high,
                unrecoverable_records=max(0, low - committed),
                action=(
                    f"offsets {committed}..{low - 1} are gone from Kafka: re-capture the table (incremental snapshot),"
                    f" then, writers stopped, kafka-consumer-groups.sh --group {self._group}"
                    f" --topic {topic}:{partition} --reset-offsets --to-earliest --execute"
                ),
            )


def _starts(settings: Settings, group_id: str, partitions: list[TP]) -> dict[TP, tuple[int, Watermarks | None]]:
    """Each partition's committed offset (negative: never) and its log's bounds (None: not known in time), in
    three requests whatever the number of partitions, without joining the group."""
    if not partitions:
        return {}
    admin = admin_client(settings.kafka)
    committed = committed_offsets(admin, group_id, timeout_s=_OFFSETS_TIMEOUT_S)
    bounds = log_bounds(admin, partitions, timeout_s=_OFFSETS_TIMEOUT_S)
    return {tp: (committed.get(tp, -1), bounds.get(tp)) for tp in partitions}
