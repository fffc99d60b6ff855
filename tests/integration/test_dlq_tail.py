"""The monitor's DLQ reader against the real broker, on a topic written in Kafka transactions (the enricher's
DLQ is): its commit markers are never given to a consumer, and records keep arriving while it reads."""

from __future__ import annotations

import threading
import uuid

from confluent_kafka import Producer

from services.common.kafka import ensure_topics, producer
from services.common.kafka.offsets import DlqTail, OffsetsReader
from services.common.settings import Settings
from services.stack.runtime import Stack

TIMEOUT_S = 2.0


def _transaction(client: Producer, topic: str, count: int) -> None:
    client.begin_transaction()
    for i in range(count):
        client.produce(topic, key=f"k{i}".encode(), value=b"{}", partition=0)
    client.commit_transaction(30)


def test_a_transactional_dlq_is_read_to_its_end_while_records_keep_arriving(stack: Stack, settings: Settings) -> None:
    topic = f"_cdcflow.dlq.tailtest{uuid.uuid4().hex[:8]}"
    ensure_topics(settings.kafka, [topic])
    client = producer(settings.kafka, **{"transactional.id": f"{topic}-producer"})
    client.init_transactions(30)
    _transaction(client, topic, 5)  # offsets 0..4, the commit marker at 5
    reader, tail = OffsetsReader(settings.kafka, timeout_s=TIMEOUT_S), DlqTail(settings.kafka, timeout_s=TIMEOUT_S)
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            _transaction(client, topic, 20)

    storming = threading.Thread(target=storm, daemon=True)
    try:
        ends = reader.watermarks(reader.partitions([topic]))
        storming.start()
        found: list[list[int]] = []
        reading = threading.Thread(target=lambda: found.append([int(m.offset() or 0) for m in tail.read(ends)]))
        reading.start()
        reading.join(timeout=60)
        assert not reading.is_alive(), "the read did not end while records kept arriving past the end it was given"
        assert found == [[0, 1, 2, 3, 4]]
        stop.set()
        storming.join(timeout=60)
        later = reader.watermarks(reader.partitions([topic]))  # every transaction is complete: 21 offsets each
        written = later[(topic, 0)].end - ends[(topic, 0)].end
        assert written % 21 == 0
        assert len(tail.read(later)) == written // 21 * 20  # from where the first read stopped, not beyond the end
    finally:
        stop.set()
        tail.close()
        reader.close()
