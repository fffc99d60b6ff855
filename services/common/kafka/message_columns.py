"""Columns of a consumed batch: one of the client's getters mapped over every message.

These run for every record, so they map the unbound C methods (``Message.offset``) over the batch: no
Python bytecode per message, and no bound method object per call either (``operator.methodcaller`` builds
one on every call, which costs four times the getter itself).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import pyarrow as pa
from confluent_kafka import KafkaError, Message

__all__ = [
    "Fetched",
    "MessageBatch",
    "batches_by_topic",
    "errors",
    "offsets",
    "partition_runs",
    "partitions",
    "timestamps_ms",
    "values",
]

_SECOND = operator.itemgetter(1)


def values(messages: Sequence[Message]) -> list[bytes | None]:
    return list(map(Message.value, messages))


def offsets(messages: Sequence[Message]) -> np.ndarray:
    return np.fromiter(map(Message.offset, messages), dtype=np.int64, count=len(messages))


def partitions(messages: Sequence[Message]) -> np.ndarray:
    return np.fromiter(map(Message.partition, messages), dtype=np.int32, count=len(messages))


def timestamps_ms(messages: Sequence[Message]) -> np.ndarray:
    """The timestamps' values (the client returns ``(type, value)`` pairs)."""
    return np.fromiter(map(_SECOND, map(Message.timestamp, messages)), dtype=np.int64, count=len(messages))


def errors(messages: Sequence[Message]) -> list[KafkaError | None]:
    return list(map(Message.error, messages))


def partition_runs(messages: Sequence[Message]) -> list[tuple[str, int, int, int]]:
    """``(topic, partition, start, stop)`` of each run of consecutive messages from one partition.

    A consumed batch arrives as such runs; the boundaries are found with array comparisons rather than a
    comparison per message in Python.
    """
    n = len(messages)
    if n == 0:
        return []
    topics = list(map(Message.topic, messages))
    numbers = partitions(messages)
    topic_changes = np.fromiter(map(operator.ne, topics[1:], topics[:-1]), dtype=bool, count=n - 1)
    starts = [0, *(np.flatnonzero(topic_changes | (numbers[1:] != numbers[:-1])) + 1).tolist()]
    stops = [*starts[1:], n]
    return [(str(topics[a]), int(numbers[a]), a, b) for a, b in zip(starts, stops, strict=True)]


@dataclass(frozen=True, slots=True)
class MessageBatch:
    """Consumed messages as columns aligned by position: values (null for a tombstone), partitions, offsets
    and timestamps.

    Decoding reads only the columns; a record's whole message (key, headers) is built when it is needed —
    for the dead-letter queue — by ``message_at`` from the record's position in what was consumed.
    """

    values: pa.LargeBinaryArray
    partitions: np.ndarray
    offsets: np.ndarray
    timestamps_ms: np.ndarray
    message_at: Callable[[int], Message]
    positions: np.ndarray

    @classmethod
    def of(cls, messages: Sequence[Message], partition_numbers: np.ndarray | None = None) -> MessageBatch:
        """The batch's columns; ``partition_numbers`` when the caller already has them (one pass fewer)."""
        if partition_numbers is None:
            partition_numbers = partitions(messages)
        return cls(
            pa.array(values(messages), type=pa.large_binary()),
            partition_numbers,
            offsets(messages),
            timestamps_ms(messages),
            messages.__getitem__,
            np.arange(len(messages), dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def tombstones(self) -> int:
        return int(self.values.null_count)

    def message(self, index: int) -> Message:
        return self.message_at(int(self.positions[index]))

    def value_list(self) -> list[bytes | None]:
        """The values as Python bytes, for the paths that look at one record at a time."""
        return self.values.to_pylist()  # type: ignore[no-any-return]

    def with_values(self, values: Sequence[bytes | None]) -> MessageBatch:
        """The same records with other values (e.g. unwrapped ones); their messages keep the originals."""
        return replace(self, values=pa.array(values, type=pa.large_binary()))

    def part(self, start: int, stop: int | None = None) -> MessageBatch:
        if start == 0 and stop is None:
            return self
        span = slice(start, stop)
        return MessageBatch(
            self.values[span],
            self.partitions[span],
            self.offsets[span],
            self.timestamps_ms[span],
            self.message_at,
            self.positions[span],
        )

    def take(self, indices: np.ndarray) -> MessageBatch:
        return MessageBatch(
            self.values.take(pa.array(indices, type=pa.int64())),
            self.partitions[indices],
            self.offsets[indices],
            self.timestamps_ms[indices],
            self.message_at,
            self.positions[indices],
        )

    def split(self) -> tuple[MessageBatch, MessageBatch]:
        half = len(self) // 2
        return self.part(0, half), self.part(half)

    def partition_spans(self) -> list[tuple[int, int, int]]:
        """``(partition, start, stop)`` of each partition of a batch grouped by partition."""
        if not len(self):
            return []
        starts = [0, *(np.flatnonzero(np.diff(self.partitions)) + 1).tolist()]
        stops = [*starts[1:], len(self)]
        return [(int(self.partitions[a]), a, b) for a, b in zip(starts, stops, strict=True)]


class Fetched(Protocol):
    """What one consume call returned, as columns aligned by position, with its runs of one partition."""

    @property
    def runs(self) -> list[tuple[str, int, int, int]]: ...  # (topic, partition, start, stop)
    @property
    def values(self) -> pa.LargeBinaryArray: ...
    @property
    def offsets(self) -> np.ndarray: ...
    @property
    def timestamps_ms(self) -> np.ndarray: ...
    def message(self, index: int) -> Message: ...


def batches_by_topic(fetched: Fetched) -> dict[str, MessageBatch]:
    """Each topic's records, grouped by partition (in order of first appearance), each partition's in order.

    A consumed batch comes as runs of one partition, and a partition can have more than one run in it. A
    topic whose records are one stretch of the batch (the usual case) gets slices of its columns; otherwise
    they are gathered.
    """
    spans: dict[str, dict[int, list[tuple[int, int]]]] = {}
    for topic, partition, start, stop in fetched.runs:
        spans.setdefault(topic, {}).setdefault(partition, []).append((start, stop))
    return {topic: _gather(fetched, runs) for topic, runs in spans.items()}


def _gather(fetched: Fetched, runs: dict[int, list[tuple[int, int]]]) -> MessageBatch:
    ordered = [run for partition_runs in runs.values() for run in partition_runs]
    sizes = [sum(stop - start for start, stop in partition_runs) for partition_runs in runs.values()]
    numbers = np.repeat(np.fromiter(runs, dtype=np.int32, count=len(runs)), sizes)
    if all(a[1] == b[0] for a, b in itertools.pairwise(ordered)):
        first, last = ordered[0][0], ordered[-1][1]
        span = slice(first, last)
        return MessageBatch(
            fetched.values.slice(first, last - first),
            numbers,
            fetched.offsets[span],
            fetched.timestamps_ms[span],
            fetched.message,
            np.arange(first, last, dtype=np.int64),
        )
    positions = np.concatenate([np.arange(start, stop, dtype=np.int64) for start, stop in ordered])
    return MessageBatch(
        fetched.values.take(pa.array(positions)),
        numbers,
        fetched.offsets[positions],
        fetched.timestamps_ms[positions],
        fetched.message,
        positions,
    )
