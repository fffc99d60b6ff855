"""Where a partition starts, and that it goes on without a gap.

A committed offset outside the log — retention deleted records this group never wrote, or the topic was
recreated — is never jumped over: it is checked when the partition is assigned, and a jump past the log start
while it is consumed is caught (the writer's module docstring, ``app.py``, has the whole story and the
operator's way out).
"""

from __future__ import annotations

from collections.abc import Callable

from services.common.kafka import KafkaException, TopicPartition, consumer
from services.common.logging import get_logger
from services.common.settings import Settings
from services.consumer.checkpoint import TP
from services.consumer.errors import OffsetsOutOfRangeError

__all__ = ["Continuity"]

log = get_logger(__name__)

_OFFSETS_TIMEOUT_S = 10.0

Watermarks = Callable[[TP], tuple[int, int]]
"""``(log start, log end)`` of a partition, as the consumer last saw them."""


class Continuity:
    """The offset each partition's next record must have; raises :class:`OffsetsOutOfRangeError` on a loss."""

    def __init__(self, settings: Settings, watermarks: Watermarks) -> None:
        self._settings = settings
        self._group = settings.writer.group_id
        self._watermarks = watermarks
        self._expected: dict[TP, int] = {}

    def check_assigned(self, partitions: list[TP]) -> None:
        """Each newly assigned partition's committed offset must still be in its log."""
        try:
            starts = _starts(self._settings, self._group, partitions)
        except KafkaException as exc:  # a broker hiccup: the check is skipped, loudly; the partitions start as usual
            log.warning("writer.start_check_failed", partitions=len(partitions), error=str(exc))
            return
        lost: list[tuple[str, int, int, int, int]] = []
        for tp, (committed, low, high) in starts.items():
            if committed < 0:
                continue  # never committed: librdkafka starts it at the beginning of its log
            if committed < low or committed > high:
                lost.append((tp[0], tp[1], committed, low, high))
            self._expected[tp] = committed
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


def _starts(settings: Settings, group_id: str, partitions: list[TP]) -> dict[TP, tuple[int, int, int]]:
    """``(committed, log start, log end)`` of each partition (committed negative: never), read by a consumer that
    joins no group."""
    if not partitions:
        return {}
    client = consumer(settings.kafka, group_id)  # assigned nothing, subscribed to nothing: it does not join
    try:
        committed = client.committed([TopicPartition(t, p) for t, p in partitions], timeout=_OFFSETS_TIMEOUT_S)
        starts = {}
        for c in committed:
            low, high = client.get_watermark_offsets(TopicPartition(c.topic, c.partition), timeout=_OFFSETS_TIMEOUT_S)
            starts[(c.topic, c.partition)] = (c.offset, low, high)
        return starts
    finally:
        client.close()
