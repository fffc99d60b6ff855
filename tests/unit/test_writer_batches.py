"""How the writer reads a consumed batch as columns and splits it by partition (real Message objects)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from services.common.kafka import message_columns
from services.consumer.app import _by_partition, _by_topic


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


def test_a_topic_is_taken_in_whole_with_its_partitions_apart() -> None:
    batch = [_message("a", 1, 5), _message("b", 0, 7), _message("a", 0, 10), _message("a", 1, 6)]
    topics = _by_topic(batch)
    assert {t: {p: [m.offset() for m in run] for p, run in runs.items()} for t, runs in topics.items()} == {
        "a": {1: [5, 6], 0: [10]},
        "b": {0: [7]},
    }


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


def test_runs_break_on_a_topic_change_alone() -> None:
    batch = [_message("a", 0, 1), _message("b", 0, 1), _message("b", 0, 2), _message("a", 0, 2)]
    assert message_columns.partition_runs(batch) == [("a", 0, 0, 1), ("b", 0, 1, 3), ("a", 0, 3, 4)]


def test_columns_follow_the_messages() -> None:
    batch = [
        Message(topic="a", partition=0, offset=41, value=b"x", timestamp=(1, 1_700_000_000_123)),
        Message(topic="a", partition=0, offset=42, value=None, timestamp=(1, 1_700_000_000_456)),
    ]
    assert message_columns.values(batch) == [b"x", None]
    assert message_columns.offsets(batch).tolist() == [41, 42]
    assert message_columns.partitions(batch).tolist() == [0, 0]
    assert message_columns.timestamps_ms(batch).tolist() == [1_700_000_000_123, 1_700_000_000_456]
    assert message_columns.errors(batch) == [None, None]
