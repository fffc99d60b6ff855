"""Consumer lag from outside the consumers: records and seconds behind, per group and partition.

Records: the high watermark minus the group's *committed* offset (the log start when nothing is committed).
Seconds: the age of the oldest record the group has not committed, 0 only when every record is committed.

A record's age comes from when the partition's high watermark passed its offset. Every poll samples each
partition's watermark into a :class:`WatermarkHistory`; the write time of any offset inside the history is
interpolated between the last sighting at or below it and the first sighting above it, as kafka-lag-exporter
does: an estimate within one poll of the truth, either way. An offset older than the history (the monitor just
started) is dated by reading that record's timestamp once, and so is the oldest uncommitted offset of a group
that has not moved for a few polls: a read-committed read also tells when all that follows it are transaction
markers or aborted records, which no consumer can read or commit past (after a transactional producer, such as
``cdcflow dlq replay``), so nothing is uncommitted and the lag is 0 s, however many offsets they take. Nothing
here depends on the group's members being alive: a dead writer's committed offset stays put, the records after
it keep ageing, and so does its lag.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from services.common.kafka.offsets import FirstRecord, OffsetsReader, Watermarks
from services.common.logging import get_logger
from services.common.metrics import MonitorMetrics

__all__ = ["STUCK_POLLS", "LagProbe", "PartitionLag", "Sample", "WatermarkHistory", "partition_lag"]

log = get_logger(__name__)

TP = tuple[str, int]
GroupTP = tuple[str, TP]

# A committed offset unchanged for this many polls is looked at directly: the consumer is stopped, or what it
# has not committed are only transaction markers or aborted records, which it can never read or commit past.
STUCK_POLLS = 3


@dataclass(frozen=True, slots=True)
class Sample:
    """The high watermark ``offset`` seen at unix time ``at``."""

    offset: int
    at: float


class WatermarkHistory:
    """One partition's high watermark over time: at most ``max_samples`` sightings, newest last.

    A plateau (the watermark unchanged over several polls) keeps only its first and its last sighting: the
    last one bounds from below when the next record was written, which is what the interpolation needs.
    """

    def __init__(self, max_samples: int) -> None:
        self._max = max(2, max_samples)
        self._samples: list[Sample] = []

    @property
    def samples(self) -> list[Sample]:
        return list(self._samples)

    def observe(self, end: int, at: float) -> None:
        samples = self._samples
        if samples and end < samples[-1].offset:
            samples.clear()  # the topic was recreated: the old history describes another log
        if len(samples) >= 2 and samples[-1].offset == end and samples[-2].offset == end:
            samples[-1] = Sample(end, at)
        else:
            samples.append(Sample(end, at))
        if len(samples) > self._max:
            del samples[: len(samples) - self._max]

    def written_at(self, offset: int) -> float | None:
        """When the record at ``offset`` was appended, interpolated; None outside the history."""
        samples = self._samples
        after = bisect_right(samples, offset, key=lambda s: s.offset)  # the first sighting with the record in it
        if after == 0 or after == len(samples):
            return None
        low, high = samples[after - 1], samples[after]
        fraction = (offset + 1 - low.offset) / (high.offset - low.offset)
        return low.at + fraction * (high.at - low.at)

    def first_seen(self) -> float | None:
        return self._samples[0].at if self._samples else None


@dataclass(frozen=True, slots=True)
class PartitionLag:
    records: int
    oldest_uncommitted: int | None  # the offset to date; None when nothing is uncommitted


def partition_lag(committed: int | None, marks: Watermarks) -> PartitionLag:
    """Lag of one partition of one group; ``committed`` None when the group has committed nothing there."""
    if committed is None:
        records = max(0, marks.end - marks.start)
        first = marks.start
    else:
        records = max(0, marks.end - committed)
        first = max(committed, marks.start)  # records retention deleted cannot be dated, the first kept one can
    if records == 0:
        return PartitionLag(0, None)
    return PartitionLag(records, min(first, marks.end - 1))


class LagProbe:
    """Every group whose id starts with ``group_prefix``: lag, committed and end offsets per partition."""

    name = "kafka"

    def __init__(
        self,
        reader: OffsetsReader,
        metrics: MonitorMetrics,
        *,
        group_prefix: str,
        max_samples: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reader = reader
        self._metrics = metrics
        self._prefix = group_prefix
        self._max_samples = max_samples
        self._clock = clock
        self._histories: dict[TP, WatermarkHistory] = {}
        self._unchanged: dict[GroupTP, tuple[int | None, int]] = {}  # committed offset, polls it stayed put
        self._firsts: dict[GroupTP, tuple[int, int, FirstRecord]] = {}  # asked offset, end then, what was found
        self._reported: set[tuple[str, str, int]] = set()
        self._ends_reported: set[TP] = set()

    def close(self) -> None:
        self._reader.close()

    def poll(self) -> None:
        groups = [g for g in self._reader.groups() if g.startswith(self._prefix)]
        committed, unread = self._committed(groups)
        partitions = {group: self._partitions(group, offsets) for group, offsets in committed.items()}
        marks = self._reader.watermarks(tp for tps in partitions.values() for tp in tps)
        now = self._clock()
        for tp, mark in marks.items():
            self._histories.setdefault(tp, WatermarkHistory(self._max_samples)).observe(mark.end, now)
            self._metrics.end_offset.labels(tp[0], str(tp[1])).set(mark.end)
        for group, tps in partitions.items():
            for tp in tps:
                if tp in marks:  # else its offsets could not be listed this time: its series stay as they were
                    self._report(group, tp, committed[group].get(tp), marks[tp], now)
        # a group whose offsets could not be read this time keeps its series as they were
        listed = {(group, *tp) for group, tps in partitions.items() for tp in tps}
        listed |= {key for key in self._reported if key[0] in unread}
        self._forget(listed, {(topic, partition) for _, topic, partition in listed})
        if unread:  # the others are reported; the poll still fails, so probe_up says some series are stale
            raise RuntimeError(f"the committed offsets of {len(unread)} group(s) could not be read: {sorted(unread)}")

    def _committed(self, groups: list[str]) -> tuple[dict[str, dict[TP, int]], set[str]]:
        """Each group's committed offsets, and the groups whose offsets could not be read (one group being
        deleted, or its coordinator moving, must not hide every other group's lag)."""
        committed, unread = {}, set()
        for group in groups:
            try:
                committed[group] = self._reader.committed(group)
            except Exception as exc:
                log.info("monitor.group_offsets_unread", group=group, error=str(exc))
                unread.add(group)
        return committed, unread

    def _partitions(self, group: str, committed: dict[TP, int]) -> list[TP]:
        """Every partition of the topics the group has committed on or is assigned: a partition it never
        committed on still has lag."""
        topics = {topic for topic, _ in committed}
        try:
            topics |= self._reader.assigned_topics(group)
        except Exception as exc:  # the committed offsets alone still give most of the picture
            log.info("monitor.group_not_described", group=group, error=str(exc))
        return self._reader.partitions(topics)

    def _report(self, group: str, tp: TP, committed: int | None, marks: Watermarks, now: float) -> None:
        labels = (group, tp[0], str(tp[1]))
        lag = partition_lag(committed, marks)
        # computed first (it may read a record), so the gauges of one partition change together
        seconds = self._seconds((group, tp), committed, lag, marks.end, now)
        self._metrics.lag_records.labels(*labels).set(lag.records)
        if committed is None:
            self._metrics.committed_offset.remove(*labels)
        else:
            self._metrics.committed_offset.labels(*labels).set(committed)
        if seconds is not None:
            self._metrics.lag_seconds.labels(*labels).set(seconds)

    def _seconds(self, key: GroupTP, committed: int | None, lag: PartitionLag, end: int, now: float) -> float | None:
        """The age of the oldest uncommitted record; None when it cannot be told this time.

        Dated from the watermark history while the group moves; read from the partition itself when the
        history does not reach back that far, or when the committed offset has stayed put for a while: then
        what lies after it may be only transaction markers or aborted records (nothing uncommitted, 0 s), and
        otherwise the record itself gives its exact time.
        """
        previous, polls = self._unchanged.get(key, (committed, -1))
        polls = polls + 1 if previous == committed else 0
        self._unchanged[key] = (committed, polls)
        oldest = lag.oldest_uncommitted
        if oldest is None:
            return 0.0
        history = self._histories.get(key[1])
        interpolated = history.written_at(oldest) if history else None
        if interpolated is not None and polls < STUCK_POLLS:
            return max(0.0, now - interpolated)
        first = self._first_record(key, oldest, end)
        if first is not None and first.offset is None:
            return 0.0
        if first is not None and first.timestamp_ms is not None:
            return max(0.0, now - first.timestamp_ms / 1000)
        # the partition could not be read in time: the history's answer, else the record is at least as old as
        # the first sighting of the partition
        fallback = interpolated if interpolated is not None else history.first_seen() if history else None
        return None if fallback is None else max(0.0, now - fallback)

    def _first_record(self, key: GroupTP, offset: int, end: int) -> FirstRecord | None:
        """The first readable record from ``offset`` on, read once per offset (again when none was found and
        the partition has grown since)."""
        known = self._firsts.get(key)
        if known is not None and known[0] == offset and (known[2].offset is not None or known[1] == end):
            return known[2]
        found = self._reader.first_record(key[1][0], key[1][1], offset)
        if found is not None:
            self._firsts[key] = (offset, end, found)
        return found

    def _forget(self, listed: set[tuple[str, str, int]], partitions: set[TP]) -> None:
        """Drop the series of groups and partitions that are gone (a deleted group or topic)."""
        for group, topic, partition in self._reported - listed:
            for gauge in (self._metrics.lag_records, self._metrics.lag_seconds, self._metrics.committed_offset):
                gauge.remove(group, topic, str(partition))
            self._unchanged.pop((group, (topic, partition)), None)
            self._firsts.pop((group, (topic, partition)), None)
        for topic, partition in self._ends_reported - partitions:
            self._metrics.end_offset.remove(topic, str(partition))
            self._histories.pop((topic, partition), None)
        self._reported, self._ends_reported = listed, partitions
