"""The DLQ publisher never lets the client's synchronous errors out, and never drops a record.

The real confluent_kafka Producer throughout: against an address nothing listens on (its queue fills and never
drains) and against librdkafka's built-in mock cluster (a real broker protocol in process, read back with a real
consumer).
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import Iterator

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Message, TopicPartition

from services.common.debezium.records import DecodeFailure, Reason
from services.common.settings import KafkaSettings
from services.consumer.dlq import DlqPublisher, dlq_topic
from services.consumer.errors import DlqDeliveryError, DlqRecordTooLargeError

GROUP = "unit-dlq"
SOURCE = "cdcflow.lending.transactions"


def _failure(
    offset: int, value: bytes | None, headers: list[tuple[str, str | bytes | None]] | None = None
) -> DecodeFailure:
    message = Message(
        topic=SOURCE,
        partition=4,
        offset=offset,
        key=b'{"transaction_id":7}',
        value=value,
        headers=headers if headers is not None else [("origin", b"\x00\xff")],
        timestamp=(TIMESTAMP_CREATE_TIME, 1_795_387_781_000 + offset),
    )
    return DecodeFailure(message, Reason.MALFORMED_JSON, "not JSON", "JSONDecodeError")


@pytest.fixture
def mock_publisher() -> Iterator[DlqPublisher]:
    """A publisher on a mock cluster of its own, with a 10,000-byte message limit and a five-record queue."""
    publisher = DlqPublisher(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"),
        GROUP,
        "unit-worker",
        create_topic=False,
        **{"test.mock.num.brokers": 1, "message.max.bytes": 10_000, "queue.buffering.max.messages": 5},
    )
    yield publisher
    publisher.close(timeout_s=5)


def _published(publisher: DlqPublisher) -> list[Message]:
    """Every record of the DLQ topic on the publisher's mock cluster."""
    metadata = publisher._producer.list_topics(timeout=10)
    broker = next(iter(metadata.brokers.values()))
    reader = Consumer(
        {
            "bootstrap.servers": f"{broker.host}:{broker.port}",
            "group.id": "unit-dlq-reader",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    partitions = sorted(metadata.topics[publisher.topic].partitions)
    reader.assign([TopicPartition(publisher.topic, p, 0) for p in partitions])
    found: list[Message] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    while len(at_end) < len(partitions) and time.monotonic() < deadline:
        message = reader.poll(0.5)
        if message is None:
            continue
        if message.error() is not None:
            at_end.add(int(message.partition() or 0))
            continue
        found.append(message)
    reader.close()
    return sorted(found, key=lambda m: int(_headers(m)["cdcflow.source.offset"] or b""))


def _headers(message: Message) -> dict[str, bytes | None]:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {k: v.encode() if isinstance(v, str) else v for k, v in pairs}


def test_a_full_queue_is_backpressure_and_nothing_is_dropped(mock_publisher: DlqPublisher) -> None:
    for offset in range(40):  # eight times what the queue holds
        assert mock_publisher.publish(_failure(offset, f'{{"n":{offset}}}'.encode()))
    mock_publisher.confirm(SOURCE, 4, timeout_s=30)
    published = _published(mock_publisher)
    assert [int(_headers(m)["cdcflow.source.offset"] or b"") for m in published] == list(range(40))
    assert [m.value() for m in published] == [f'{{"n":{o}}}'.encode() for o in range(40)]


def test_an_unreachable_dlq_is_a_transient_error_not_a_client_error() -> None:
    """Before its first record of a partition the publisher reads what the DLQ already holds of it: a broker
    nothing answers for is a transient error (the partition is retried later), and nothing is committed."""
    publisher = DlqPublisher(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"),  # nothing listens there
        GROUP,
        "unit-worker",
        queue_wait_s=0.5,
        read_timeout_s=0.5,
        create_topic=False,
        **{"queue.buffering.max.messages": 2, "message.timeout.ms": 600_000},
    )
    with pytest.raises(DlqDeliveryError, match="reading"):
        publisher.publish(_failure(1, b"a"))
    publisher.confirm(SOURCE, 4, timeout_s=0.2)  # nothing was sent: nothing to wait for
    publisher.close(timeout_s=0.1)


def test_a_value_over_the_limit_is_kept_compressed(mock_publisher: DlqPublisher) -> None:
    value = b'{"reference":"' + b"R" * 50_000 + b'"}'
    before_ms = time.time_ns() // 1_000_000
    assert mock_publisher.publish(_failure(10, value))
    mock_publisher.confirm(SOURCE, 4, timeout_s=30)
    (message,) = _published(mock_publisher)
    headers = _headers(message)
    assert message.value() is not None
    assert zlib.decompress(message.value() or b"") == value
    assert headers["cdcflow.value.encoding"] == b"deflate"
    assert headers["cdcflow.value.size"] == str(len(value)).encode()
    assert headers["origin"] == b"\x00\xff"
    assert headers["cdcflow.error.reason"] == Reason.MALFORMED_JSON.encode()
    assert message.key() == b'{"transaction_id":7}'
    # stamped when it was dead-lettered, so the DLQ's retention counts from then; the original's time is a header
    assert message.timestamp()[1] >= before_ms
    assert headers["cdcflow.source.timestamp"] == b"1795387781010"


def test_a_value_too_large_even_compressed_is_left_out_with_its_digest_and_coordinates(
    mock_publisher: DlqPublisher,
) -> None:
    value = os.urandom(50_000)  # random bytes do not compress
    assert mock_publisher.publish(_failure(11, value))
    mock_publisher.confirm(SOURCE, 4, timeout_s=30)
    (message,) = _published(mock_publisher)
    headers = _headers(message)
    assert message.value() == b""
    assert headers["cdcflow.value.omitted"] == b"true"
    assert headers["cdcflow.value.size"] == b"50000"
    assert headers["cdcflow.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert (headers["cdcflow.source.topic"], headers["cdcflow.source.partition"], headers["cdcflow.source.offset"]) == (
        SOURCE.encode(),
        b"4",
        b"11",
    )


def test_a_record_too_large_without_its_value_is_a_named_error(mock_publisher: DlqPublisher) -> None:
    huge_headers: list[tuple[str, str | bytes | None]] = [("origin", b"h" * 20_000)]
    with pytest.raises(DlqRecordTooLargeError):
        mock_publisher.publish(_failure(12, b"{}", headers=huge_headers))
    assert isinstance(DlqRecordTooLargeError("x"), DlqDeliveryError)  # transient: the partition is retried
    assert mock_publisher.topic == dlq_topic(GROUP)


def test_a_record_in_flight_is_not_sent_again_when_its_batch_is_read_again(mock_publisher: DlqPublisher) -> None:
    """A batch read again after a transient failure meets its bad records again before their first sends are
    acknowledged (deliveries are reported only when the producer is polled): each is sent once."""
    for offset in range(3):
        assert mock_publisher.publish(_failure(offset, b"{"))
    for offset in range(3):  # the batch again, at once
        assert not mock_publisher.publish(_failure(offset, b"{"))
    mock_publisher.confirm(SOURCE, 4, timeout_s=30)
    for offset in range(3):  # and after the acknowledgements
        assert not mock_publisher.publish(_failure(offset, b"{"))
    published = _published(mock_publisher)
    assert sorted(int(_headers(m)["cdcflow.source.offset"] or b"") for m in published) == [0, 1, 2]


def test_the_next_owner_of_a_partition_does_not_publish_again_what_is_in_the_dlq(
    mock_publisher: DlqPublisher,
) -> None:
    """A writer killed after its DLQ sends and before its commit: the next one reads the partition's records
    again and finds them in the DLQ. Every record of one source partition is in one DLQ partition."""
    for offset in (5, 6):
        assert mock_publisher.publish(_failure(offset, b"{"))
    mock_publisher.confirm(SOURCE, 4, timeout_s=30)
    broker = next(iter(mock_publisher._producer.list_topics(timeout=10).brokers.values()))
    successor = DlqPublisher(
        KafkaSettings(bootstrap_servers=f"{broker.host}:{broker.port}"), GROUP, "unit-successor", create_topic=False
    )
    try:
        assert not successor.publish(_failure(5, b"{"))
        assert not successor.publish(_failure(6, b"{"))
        assert successor.publish(_failure(7, b"{"))  # never published: it is
        successor.confirm(SOURCE, 4, timeout_s=30)
    finally:
        successor.close(timeout_s=5)
    published = _published(mock_publisher)
    assert sorted(int(_headers(m)["cdcflow.source.offset"] or b"") for m in published) == [5, 6, 7]
    assert len({m.partition() for m in published}) == 1
