"""How a consumed batch becomes columns, grouped by topic and partition (real Message objects)."""

from __future__ import annotations

import json

import numpy as np
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, Message

from services.common.kafka import message_columns
from services.common.kafka.batch_consumer import Fetch
from services.common.kafka.message_columns import MessageBatch, batches_by_topic


def test_columns_follow_the_messages() -> None:
    batch = [
        Message(topic="a", partition=0, offset=41, value=b"x", timestamp=(1, 1_700_000_000_123)),
        Message(topic="a", partition=0, offset=42, value=None, timestamp=(1, 1_700_000_000_456)),
    ]
    assert message_columns.values(batch) == [b"x", None]
    assert message_columns.offsets(batch).tolist() == [41, 42]
    assert message_columns.partitions(batch).tolist() == [0, 0]
    assert message_columns.timestamps_ms(batch).tolist() == [1_700_000_000_123, 1_700_000_000_456]


def _record(topic: str, partition: int, offset: int) -> Message:
    value = f'{{"t": "{topic}", "p": {partition}, "o": {offset}}}'.encode()
    return Message(topic=topic, partition=partition, offset=offset, value=value, timestamp=(1, 1_000 + offset))


def _described(batch: MessageBatch) -> list[tuple[int, int, bytes | None, int, int | None]]:
    """Each row's partition, offset, value, timestamp, and the offset of the message it points back to."""
    return [
        (int(p), int(o), v, int(t), batch.message(i).offset())
        for i, (p, o, v, t) in enumerate(
            zip(batch.partitions, batch.offsets, batch.value_list(), batch.timestamps_ms, strict=True)
        )
    ]


def test_a_topic_in_one_stretch_is_sliced_and_another_gathered_by_partition() -> None:
    fetched = Fetch.of_messages(
        [
            _record("a", 1, 5),
            _record("a", 1, 6),
            _record("a", 0, 10),
            _record("b", 2, 7),
            _record("c", 0, 1),
            _record("b", 0, 3),
            _record("b", 2, 8),  # partition 2's second run joins its first
        ]
    )
    batches = batches_by_topic(fetched)
    assert list(batches) == ["a", "b", "c"]
    a = batches["a"]
    assert a.values.buffers()[2].address == fetched.values.buffers()[2].address  # a slice, not a copy
    assert [(p, o) for p, o, *_ in _described(a)] == [(1, 5), (1, 6), (0, 10)]
    assert a.partition_spans() == [(1, 0, 2), (0, 2, 3)]
    b = batches["b"]
    assert [(p, o) for p, o, *_ in _described(b)] == [(2, 7), (2, 8), (0, 3)]
    assert b.partition_spans() == [(2, 0, 2), (0, 2, 3)]
    for topic, batch in batches.items():
        for p, o, v, t, pointed in _described(batch):
            assert v is not None
            assert json.loads(v) == {"t": topic, "p": p, "o": o}
            assert (t, pointed) == (1_000 + o, o)


def test_a_part_and_a_take_keep_rows_and_messages_together() -> None:
    fetched = Fetch.of_messages([_record("a", 0, o) for o in range(6)])
    batch = batches_by_topic(fetched)["a"]
    assert [o for _, o, *_ in _described(batch.part(2, 4))] == [2, 3]
    taken = batch.take(np.array([5, 1, 3]))
    assert [(o, pointed) for _, o, _, _, pointed in _described(taken)] == [(5, 5), (1, 1), (3, 3)]
    first, second = batch.split()
    assert (len(first), len(second)) == (3, 3)
    assert second.message(0).offset() == 3


def test_origins_at_indices_point_where_a_take_points_without_the_values() -> None:
    fetched = Fetch.of_messages([_record("a", p, o) for p, o in ((0, 4), (0, 5), (2, 9), (2, 10))])
    batch = batches_by_topic(fetched)["a"]
    chosen = np.array([3, 0, 2])
    origins = batch.origins_at(chosen)
    assert not hasattr(origins, "values")
    taken = batch.take(chosen)
    assert len(origins) == len(taken) == 3
    for name in ("partitions", "offsets", "timestamps_ms", "positions"):
        assert getattr(origins, name).tolist() == getattr(taken, name).tolist()
    assert [origins.message(i).offset() for i in range(3)] == [10, 4, 9]
    assert origins.message(0).value() == taken.values[0].as_py()


def test_tombstones_are_null_values_and_counted() -> None:
    records = [_record("a", 0, 0), Message(topic="a", partition=0, offset=1, value=None, timestamp=(1, 1))]
    batch = batches_by_topic(Fetch.of_messages(records))["a"]
    assert batch.value_list() == [records[0].value(), None]
    assert batch.tombstones == 1


def test_an_empty_fetch_has_no_topics() -> None:
    assert batches_by_topic(Fetch.of_messages([])) == {}


def test_confluent_messages_become_runs_of_one_partition_and_columns() -> None:
    """What confluent_kafka's consumer returned, as the writer's columns: a run per stretch of one partition
    (a topic or a partition changing starts one), a tombstone's null value, and -1 for a missing timestamp."""
    messages = [
        _record("a", 0, 1),
        _record("a", 0, 2),
        _record("a", 1, 2),
        _record("b", 1, 3),
        Message(topic="b", partition=1, offset=4, value=None, timestamp=(TIMESTAMP_NOT_AVAILABLE, 0)),
        _record("a", 1, 3),
    ]
    fetched = Fetch.of_messages(messages)
    assert fetched.runs == [("a", 0, 0, 2), ("a", 1, 2, 3), ("b", 1, 3, 5), ("a", 1, 5, 6)]
    assert fetched.offsets.tolist() == [1, 2, 2, 3, 4, 3]
    assert fetched.timestamps_ms.tolist() == [1_001, 1_002, 1_002, 1_003, -1, 1_003]
    assert fetched.values.to_pylist() == [m.value() for m in messages]
    assert fetched.values.null_count == 1
    assert all(fetched.message(i) is m for i, m in enumerate(messages))
    assert Fetch.of_messages([]).runs == []


def test_a_create_time_is_kept_as_it_came() -> None:
    stamp = Message(topic="a", partition=0, offset=0, value=b"{}", timestamp=(TIMESTAMP_CREATE_TIME, 0))
    assert Fetch.of_messages([stamp]).timestamps_ms.tolist() == [0]
