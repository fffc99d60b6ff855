"""How a consumed batch becomes columns, grouped by topic and partition (real Message objects)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from confluent_kafka import Message

from services.common.kafka import message_columns
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


@dataclass(frozen=True)
class _Fetched:
    """A consumed batch as the batch consumer hands it over, built from real Message objects."""

    messages: list[Message]
    runs: list[tuple[str, int, int, int]]
    values: pa.LargeBinaryArray
    offsets: np.ndarray
    timestamps_ms: np.ndarray

    @classmethod
    def of(cls, messages: list[Message]) -> _Fetched:
        runs: list[tuple[str, int, int, int]] = []
        for index, m in enumerate(messages):
            topic, partition = str(m.topic()), int(m.partition() or 0)
            if runs and runs[-1][:2] == (topic, partition):
                runs[-1] = (topic, partition, runs[-1][2], index + 1)
            else:
                runs.append((topic, partition, index, index + 1))
        return cls(
            messages,
            runs,
            pa.array([m.value() for m in messages], type=pa.large_binary()),
            np.array([m.offset() for m in messages], dtype=np.int64),
            np.array([m.timestamp()[1] for m in messages], dtype=np.int64),
        )

    def message(self, index: int) -> Message:
        return self.messages[index]


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
    fetched = _Fetched.of(
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
    fetched = _Fetched.of([_record("a", 0, o) for o in range(6)])
    batch = batches_by_topic(fetched)["a"]
    assert [o for _, o, *_ in _described(batch.part(2, 4))] == [2, 3]
    taken = batch.take(np.array([5, 1, 3]))
    assert [(o, pointed) for _, o, _, _, pointed in _described(taken)] == [(5, 5), (1, 1), (3, 3)]
    first, second = batch.split()
    assert (len(first), len(second)) == (3, 3)
    assert second.message(0).offset() == 3


def test_origins_at_indices_point_where_a_take_points_without_the_values() -> None:
    fetched = _Fetched.of([_record("a", p, o) for p, o in ((0, 4), (0, 5), (2, 9), (2, 10))])
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
    batch = batches_by_topic(_Fetched.of(records))["a"]
    assert batch.value_list() == [records[0].value(), None]
    assert batch.tombstones == 1


def test_an_empty_fetch_has_no_topics() -> None:
    assert batches_by_topic(_Fetched.of([])) == {}
