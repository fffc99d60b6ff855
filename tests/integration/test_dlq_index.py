"""The writer's index of what its DLQ holds, against the real broker: a DLQ partition too large to read in one
look is read over several, each going on from where the last one stopped; what retention deleted is let go."""

from __future__ import annotations

import uuid

from services.common.kafka import KafkaException, TopicPartition, admin_client, ensure_topics, producer
from services.common.settings import Settings
from services.consumer.dlq import _DlqIndex
from services.stack.runtime import Stack

RECORDS = 5_000
SOURCE = "cdcflow.lending.transactions"


def _dead_letters(settings: Settings, topic: str, sources: list[tuple[int, int]]) -> None:
    """DLQ records in ``topic``'s partition 0, one per (source partition, source offset), in that order."""
    client = producer(settings.kafka, **{"linger.ms": 20})
    for partition, offset in sources:
        headers: list[tuple[str, str | bytes | None]] = [
            ("cdcflow.source.topic", SOURCE.encode()),
            ("cdcflow.source.partition", str(partition).encode()),
            ("cdcflow.source.offset", str(offset).encode()),
        ]
        client.produce(topic, value=b"{}", headers=headers, partition=0)
    assert client.flush(30) == 0


def _delete_below(settings: Settings, topic: str, offset: int) -> None:
    """Move ``topic``'s partition 0 log start to ``offset``, as retention does."""
    admin = admin_client(settings.kafka)  # held while its futures run
    for future in admin.delete_records([TopicPartition(topic, 0, offset)]).values():
        future.result(timeout=30)


def test_a_large_dlq_partition_is_indexed_over_several_looks(stack: Stack, settings: Settings) -> None:
    topic = f"_cdcflow.dlq.indextest{uuid.uuid4().hex[:8]}"
    ensure_topics(settings.kafka, [topic])
    _dead_letters(settings, topic, [(2, offset) for offset in range(RECORDS)])
    # a look reads one batch and stops: far less than the partition
    index = _DlqIndex(settings.kafka, topic, timeout_s=10, read_budget_s=0)
    looks, found, cut_short = 0, None, []
    try:
        while found is None and looks < 100:
            looks += 1
            try:
                found = index.offsets(SOURCE, 2, 0, lambda: settings.kafka.bootstrap_servers)
            except KafkaException as exc:
                cut_short.append(str(exc))
    finally:
        index.close()
    assert found == set(range(RECORDS)), f"not indexed after {looks} looks: {cut_short[-1:]}"
    assert all("the next look goes on from there" in why for why in cut_short)
    assert looks > 1  # the partition was too large for one look: it took several, and they added up


def test_records_retention_deleted_are_let_go_whoever_owns_their_source(stack: Stack, settings: Settings) -> None:
    """Source partition 3 is another writer's: no commit of this one ever prunes its offsets. The index let go
    of nothing, so it grew with every DLQ record the process saw, and named records the DLQ no longer held."""
    topic = f"_cdcflow.dlq.indextest{uuid.uuid4().hex[:8]}"
    ensure_topics(settings.kafka, [topic])
    _dead_letters(settings, topic, [(2 + n % 2, n) for n in range(100)])  # DLQ offset n: source offset n
    index = _DlqIndex(settings.kafka, topic, timeout_s=10)
    brokers = lambda: settings.kafka.bootstrap_servers  # noqa: E731
    try:
        assert index.offsets(SOURCE, 3, 0, brokers) == set(range(1, 100, 2))
        _delete_below(settings, topic, 60)
        assert index.offsets(SOURCE, 3, 0, brokers) == set(range(61, 100, 2))
        assert index.offsets(SOURCE, 2, 0, brokers) == set(range(60, 100, 2))
        _dead_letters(settings, topic, [(3, 100), (3, 61)])  # 61 dead-lettered again: a newer copy at 101
        assert index.offsets(SOURCE, 3, 0, brokers) == {*range(61, 100, 2), 100}  # both copies read
        _delete_below(settings, topic, 100)
        assert index.offsets(SOURCE, 3, 0, brokers) == {61, 100}
        assert index.offsets(SOURCE, 2, 0, brokers) == set()
        index.forget_below(SOURCE, 3, 62)  # its owner committed past 61
        assert index.offsets(SOURCE, 3, 0, brokers) == {100}
    finally:
        index.close()
