"""The writer's index of what its DLQ holds, against the real broker: a DLQ partition too large to read in one
look is read over several, each going on from where the last one stopped."""

from __future__ import annotations

import uuid

from services.common.kafka import KafkaException, ensure_topics, producer
from services.common.settings import Settings
from services.consumer.dlq import _DlqIndex
from services.stack.runtime import Stack

RECORDS = 5_000
SOURCE = "cdcflow.lending.transactions"


def test_a_large_dlq_partition_is_indexed_over_several_looks(stack: Stack, settings: Settings) -> None:
    topic = f"_cdcflow.dlq.indextest{uuid.uuid4().hex[:8]}"
    ensure_topics(settings.kafka, [topic])
    client = producer(settings.kafka, **{"linger.ms": 20})
    for offset in range(RECORDS):
        headers: list[tuple[str, str | bytes | None]] = [
            ("cdcflow.source.topic", SOURCE.encode()),
            ("cdcflow.source.partition", b"2"),
            ("cdcflow.source.offset", str(offset).encode()),
        ]
        client.produce(topic, value=b"{}", headers=headers, partition=0)
    assert client.flush(30) == 0
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
