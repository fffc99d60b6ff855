"""Columns of a consumed batch: one of the client's getters mapped over every message.

These run for every record, so they map the unbound C methods (``Message.offset``) over the batch: no
Python bytecode per message, and no bound method object per call either (``operator.methodcaller`` builds
one on every call, which costs four times the getter itself).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from confluent_kafka import KafkaError, Message

__all__ = ["MessageBatch", "errors", "offsets", "partition_runs", "partitions", "timestamps_ms", "values"]

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
    """Messages with their values, partitions, offsets and timestamps as columns, aligned by position."""

    messages: Sequence[Message]
    values: Sequence[bytes | None]
    partitions: np.ndarray
    offsets: np.ndarray
    timestamps_ms: np.ndarray

    @classmethod
    def of(cls, messages: Sequence[Message], partition_numbers: np.ndarray | None = None) -> MessageBatch:
        """The batch's columns; ``partition_numbers`` when the caller already has them (one pass fewer)."""
        if partition_numbers is None:
            partition_numbers = partitions(messages)
        return cls(messages, values(messages), partition_numbers, offsets(messages), timestamps_ms(messages))

    def __len__(self) -> int:
        return len(self.messages)

    def part(self, start: int, stop: int | None = None) -> MessageBatch:
        if start == 0 and stop is None:
            return self
        span = slice(start, stop)
        return MessageBatch(
            self.messages[span], self.values[span], self.partitions[span], self.offsets[span], self.timestamps_ms[span]
        )

    def take(self, indices: np.ndarray) -> MessageBatch:
        chosen = indices.tolist()
        return MessageBatch(
            [self.messages[i] for i in chosen],
            [self.values[i] for i in chosen],
            self.partitions[indices],
            self.offsets[indices],
            self.timestamps_ms[indices],
        )

    def split(self) -> tuple[MessageBatch, MessageBatch]:
        half = len(self.messages) // 2
        return self.part(0, half), self.part(half)
