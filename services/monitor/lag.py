"""Consumer lag from outside the consumers: records and seconds behind, per group and partition.

Records: the high watermark minus the group's *committed* offset (the log start when nothing is committed).
Seconds: the age of the oldest record the group has not committed, 0 only when every record is committed.

A record's age comes from when the partition's high watermark passed its offset. Every poll samples each
partition's watermark into a :class:`WatermarkHistory`; the write time of any offset inside the history is
interpolated between the last sighting at or below it and the first sighting above it, as kafka-lag-exporter
does. An offset older than the history (the monitor just started) is dated by reading that record's timestamp
once. Nothing here depends on the group's members being alive: a dead writer's committed offset stays put,
the records after it keep ageing, and so does its lag.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from services.common.kafka.offsets import OffsetsReader, Watermarks
from services.common.logging import get_logger
from services.common.metrics import MonitorMetrics

__all__ = ["LagProbe", "PartitionLag", "Sample", "WatermarkHistory", "partition_lag"]

log = get_logger(__name__)

TP = tuple[str, int]


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
        self._stamps: dict[TP, tuple[int, float]] = {}  # the last offset dated by reading it, and its time
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
        if unread and not committed:
            raise RuntimeError(f"no group's committed offsets could be read ({len(unread)} tried)")

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
        # dated first (it may read a record), so the gauges of one partition change together
        written = None if lag.oldest_uncommitted is None else self._written_at(tp, lag.oldest_uncommitted)
        self._metrics.lag_records.labels(*labels).set(lag.records)
        if committed is None:
            self._metrics.committed_offset.remove(*labels)
        else:
            self._metrics.committed_offset.labels(*labels).set(committed)
        if lag.oldest_uncommitted is None:
            self._metrics.lag_seconds.labels(*labels).set(0)
        elif written is not None:
            self._metrics.lag_seconds.labels(*labels).set(max(0.0, now - written))

    def _written_at(self, tp: TP, offset: int) -> float | None:
        """The write time of ``offset``: from the history, else from the record itself (read once per offset),
        else the first sighting of the partition (the record is at least that old)."""
        history = self._histories.get(tp)
        interpolated = history.written_at(offset) if history else None
        if interpolated is not None:
            return interpolated
        known = self._stamps.get(tp)
        if known is not None and known[0] == offset:
            return known[1]
        stamp_ms = self._reader.timestamp_ms(tp[0], tp[1], offset)
        if stamp_ms is not None:
            self._stamps[tp] = (offset, stamp_ms / 1000)
            return stamp_ms / 1000
        return history.first_seen() if history else None

    def _forget(self, listed: set[tuple[str, str, int]], partitions: set[TP]) -> None:
        """Drop the series of groups and partitions that are gone (a deleted group or topic)."""
        for group, topic, partition in self._reported - listed:
            for gauge in (self._metrics.lag_records, self._metrics.lag_seconds, self._metrics.committed_offset):
                gauge.remove(group, topic, str(partition))
        for topic, partition in self._ends_reported - partitions:
            self._metrics.end_offset.remove(topic, str(partition))
            self._histories.pop((topic, partition), None)
            self._stamps.pop((topic, partition), None)
        self._reported, self._ends_reported = listed, partitions
