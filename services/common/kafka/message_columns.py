"""Columns of a consumed batch: one of the client's getters mapped over every message.

These run for every record, so they map the unbound C methods (``Message.offset``) over the batch: no
Python bytecode per message, and no bound method object per call either (``operator.methodcaller`` builds
one on every call, which costs four times the getter itself).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
from confluent_kafka import KafkaError, Message

__all__ = ["errors", "offsets", "partition_runs", "timestamps_ms", "values"]

_SECOND = operator.itemgetter(1)


def values(messages: Sequence[Message]) -> list[bytes | None]:
    return list(map(Message.value, messages))


def offsets(messages: Sequence[Message]) -> np.ndarray:
    return np.fromiter(map(Message.offset, messages), dtype=np.int64, count=len(messages))


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
    partitions = np.fromiter(map(Message.partition, messages), dtype=np.int64, count=n)
    topic_changes = np.fromiter(map(operator.ne, topics[1:], topics[:-1]), dtype=bool, count=n - 1)
    starts = [0, *(np.flatnonzero(topic_changes | (partitions[1:] != partitions[:-1])) + 1).tolist()]
    stops = [*starts[1:], n]
    return [(str(topics[a]), int(partitions[a]), a, b) for a, b in zip(starts, stops, strict=True)]
