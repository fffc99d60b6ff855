"""Against the real broker: the end positions of topics that exist, appear late, or never appear."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from services.common.kafka import KafkaException, admin_client, consumer, end_positions, ensure_topics, producer
from services.common.settings import Settings
from services.stack.runtime import Stack


@pytest.fixture
def topic_name(stack: Stack, settings: Settings) -> Iterator[str]:
    """A name no topic has yet; the topic is deleted afterwards if the test created it."""
    name = f"test-positions-{uuid.uuid4().hex[:12]}"
    yield name
    admin = admin_client(settings.kafka)
    if name in admin.list_topics(timeout=30).topics:
        admin.delete_topics([name], operation_timeout=30)[name].result(timeout=30)


def _produce(settings: Settings, topic: str, count: int) -> None:
    client = producer(settings.kafka)
    for i in range(count):
        client.produce(topic, value=f"{i}".encode(), partition=i % settings.kafka.topic_partitions)
    assert client.flush(30) == 0


def test_a_topic_created_while_waiting_is_positioned_at_its_end(settings: Settings, topic_name: str) -> None:
    late = threading.Timer(2.0, ensure_topics, args=(settings.kafka, [topic_name]))
    late.start()
    client = consumer(settings.kafka, f"test-positions-{uuid.uuid4().hex[:8]}")
    try:
        created = end_positions(client, [topic_name], timeout_s=60)
        late.join()
        _produce(settings, topic_name, 9)
        filled = end_positions(client, [topic_name])
    finally:
        client.close()
        late.join()
    every = list(range(settings.kafka.topic_partitions))
    assert [(p.topic, p.partition, p.offset) for p in created] == [(topic_name, i, 0) for i in every]
    assert [p.partition for p in filled] == every
    assert sum(p.offset for p in filled) == 9


def test_a_topic_that_never_appears_is_named_in_the_error(settings: Settings, topic_name: str) -> None:
    client = consumer(settings.kafka, f"test-positions-{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(KafkaException, match=f"no such topic: {topic_name}"):
            end_positions(client, [topic_name], timeout_s=2)
    finally:
        client.close()
