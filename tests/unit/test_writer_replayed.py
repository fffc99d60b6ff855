"""Records of the replay topic become batches of their original topics, at their original coordinates."""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from services.common.debezium.records import Reason
from services.common.kafka.message_columns import MessageBatch
from services.common.replay import REPLAY_COUNT, REPLAYED_FROM
from services.consumer.replayed import by_original_topic, under_original_topics

REPLAY = "_cdcflow.replay.unit"


def _replayed(offset: int, original: str | None) -> Message:
    headers: list[tuple[str, str | bytes | None]] = [("origin", b"x"), (REPLAY_COUNT, b"1")]
    if original is not None:
        headers.append((REPLAYED_FROM, original.encode()))
    return Message(
        topic=REPLAY,
        partition=1,
        offset=offset,
        key=b"k",
        value=f'{{"n": {offset}}}'.encode(),
        headers=headers,
        timestamp=(TIMESTAMP_CREATE_TIME, 1_000 + offset),
    )


def test_records_are_grouped_by_original_topic_at_their_original_coordinates() -> None:
    messages = [
        _replayed(10, "p.lending.loans:3:120"),
        _replayed(11, "p.lending.customers:0:7"),
        _replayed(12, "p.lending.loans:1:55"),
        _replayed(13, None),
        _replayed(14, "p.lending.loans:3:99"),
        _replayed(15, "not a coordinate"),
    ]
    originals, failures = by_original_topic(MessageBatch.of(messages))
    assert sorted(originals) == ["p.lending.customers", "p.lending.loans"]
    loans = originals["p.lending.loans"]
    # in (partition, offset) order: a partition's rows are in offset order, as the decoder and the sink expect
    assert loans.partitions.tolist() == [1, 3, 3]
    assert loans.offsets.tolist() == [55, 99, 120]
    assert loans.values.to_pylist() == [b'{"n": 12}', b'{"n": 14}', b'{"n": 10}']
    assert loans.timestamps_ms.tolist() == [1_012, 1_014, 1_010]
    # the record itself is still the replay topic's: should it fail again, the DLQ gets it from there
    again = loans.message(0)
    assert (again.topic(), again.partition(), again.offset()) == (REPLAY, 1, 12)
    assert [(f.message.offset(), f.reason) for f in failures] == [
        (13, Reason.MISSING_SOURCE),
        (15, Reason.MISSING_SOURCE),
    ]
    assert originals["p.lending.customers"].offsets.tolist() == [7]


def test_the_crash_guard_re_decodes_replayed_records_as_their_original_topic() -> None:
    source = Message(topic="p.lending.loans", partition=0, offset=3, value=b"{}")
    replayed = _replayed(20, "p.lending.loans:2:77")
    stray = _replayed(21, None)
    regrouped = under_original_topics({"p.lending.loans": [source], REPLAY: [replayed, stray]}, REPLAY)
    assert regrouped == {"p.lending.loans": [source, replayed], REPLAY: [stray]}
    assert regrouped["p.lending.loans"][1].topic() == REPLAY  # the message itself is untouched
