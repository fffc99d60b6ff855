"""A consumed batch as columns: what decoding reads instead of an object per record.

The batch consumer hands a fetched batch over as columns already (:func:`batches_by_topic` groups them);
:meth:`MessageBatch.of` builds the same columns from the client's ``Message`` objects, mapping the unbound
getters (``Message.offset``) over them — no Python bytecode per message, and no bound method per call.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import pyarrow as pa
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

__all__ = [
    "Fetched",
    "MessageBatch",
    "RecordOrigins",
    "batches_by_topic",
    "offsets",
    "partitions",
    "timestamps_ms",
    "values",
]

_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)


def values(messages: Sequence[Message]) -> list[bytes | None]:
    return list(map(Message.value, messages))


def offsets(messages: Sequence[Message]) -> np.ndarray:
    return np.fromiter(map(Message.offset, messages), dtype=np.int64, count=len(messages))


def partitions(messages: Sequence[Message]) -> np.ndarray:
    return np.fromiter(map(Message.partition, messages), dtype=np.int32, count=len(messages))


def timestamps_ms(messages: Sequence[Message]) -> np.ndarray:
    """The timestamps' values (the client returns ``(type, value)`` pairs), -1 where the type says there is
    none."""
    stamps = list(map(Message.timestamp, messages))
    found = np.fromiter(map(_SECOND, stamps), dtype=np.int64, count=len(stamps))
    found[np.fromiter(map(_FIRST, stamps), dtype=np.int32, count=len(stamps)) == TIMESTAMP_NOT_AVAILABLE] = -1
    return found


@dataclass(frozen=True, slots=True)
class RecordOrigins:
    """Where each record of a batch came from: its partition, offset and timestamp, and its position in what was
    consumed, from which its whole message (key, headers) is built when it is needed — for the dead-letter
    queue — by ``message_at``. What lake rows carry of their records, without the records' values."""

    partitions: np.ndarray
    offsets: np.ndarray
    timestamps_ms: np.ndarray
    message_at: Callable[[int], Message]
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)

    def message(self, index: int) -> Message:
        return self.message_at(int(self.positions[index]))

    def origins_at(self, indices: np.ndarray) -> RecordOrigins:
        """The origins of the records at ``indices``: unlike :meth:`MessageBatch.take`, no value is copied."""
        return RecordOrigins(*self._selected(indices))

    def _selected(
        self, key: slice | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[int], Message], np.ndarray]:
        """The fields of the records at ``key`` (a slice or positions), in the order of the constructor."""
        return self.partitions[key], self.offsets[key], self.timestamps_ms[key], self.message_at, self.positions[key]


@dataclass(frozen=True, slots=True)
class MessageBatch(RecordOrigins):
    """Consumed messages as columns aligned by position: values (null for a tombstone) beside their
    :class:`RecordOrigins`. Decoding reads only the columns."""

    values: pa.LargeBinaryArray

    @classmethod
    def of(cls, messages: Sequence[Message]) -> MessageBatch:
        """A batch of the client's ``Message`` objects."""
        return cls(
            partitions(messages),
            offsets(messages),
            timestamps_ms(messages),
            messages.__getitem__,
            np.arange(len(messages), dtype=np.int64),
            values=pa.array(values(messages), type=pa.large_binary()),
        )

    @property
    def tombstones(self) -> int:
        return int(self.values.null_count)

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
        return MessageBatch(*self._selected(span), values=self.values[span])

    def take(self, indices: np.ndarray) -> MessageBatch:
        return MessageBatch(*self._selected(indices), values=self.values.take(pa.array(indices, type=pa.int64())))

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
            numbers,
            fetched.offsets[span],
            fetched.timestamps_ms[span],
            fetched.message,
            np.arange(first, last, dtype=np.int64),
            values=fetched.values.slice(first, last - first),
        )
    positions = np.concatenate([np.arange(start, stop, dtype=np.int64) for start, stop in ordered])
    return MessageBatch(
        numbers,
        fetched.offsets[positions],
        fetched.timestamps_ms[positions],
        fetched.message,
        positions,
        values=fetched.values.take(pa.array(positions)),
    )
