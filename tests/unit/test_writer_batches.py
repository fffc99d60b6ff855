"""How the writer splits a consumed batch by partition, with real confluent_kafka.Message objects."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from services.consumer.app import _by_partition


def _message(topic: str, partition: int, offset: int, error: KafkaError | None = None) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, value=b"{}", error=error)


def _offsets(groups: dict[tuple[str, int], list[Message]]) -> dict[tuple[str, int], list[int | None]]:
    return {key: [m.offset() for m in messages] for key, messages in groups.items()}


def test_runs_of_partitions_are_grouped_in_order() -> None:
    batch = [
        _message("a", 0, 10),
        _message("a", 0, 11),
        _message("a", 1, 5),
        _message("b", 0, 7),
        _message("a", 0, 12),  # a partition's second run joins its first
        _message("a", 1, 6),
    ]
    assert _offsets(_by_partition(batch)) == {("a", 0): [10, 11, 12], ("a", 1): [5, 6], ("b", 0): [7]}


def test_an_error_is_left_out_and_the_rest_kept() -> None:
    eof = KafkaError(KafkaError._PARTITION_EOF)
    batch = [_message("a", 0, 1), _message("a", 0, 2, error=eof), _message("a", 0, 3), _message("a", 1, 9)]
    assert _offsets(_by_partition(batch)) == {("a", 0): [1, 3], ("a", 1): [9]}


def test_a_fatal_error_is_raised() -> None:
    fatal = KafkaError(KafkaError._FENCED, fatal=True)
    with pytest.raises(KafkaException):
        _by_partition([_message("a", 0, 1), _message("a", 0, 2, error=fatal)])


def test_an_empty_batch_has_no_partitions() -> None:
    assert _by_partition([]) == {}
