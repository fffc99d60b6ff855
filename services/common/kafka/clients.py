"""Factories for confluent-kafka clients built from :class:`KafkaSettings`.

Auto-commit is always off: only a checkpoint, after the data is durable, commits offsets.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient as Admin

from services.common.settings import KafkaSettings

__all__ = [
    "Admin",
    "Consumer",
    "KafkaException",
    "Message",
    "Producer",
    "TopicPartition",
    "admin_client",
    "consumer",
    "producer",
]

_FORCED_CONSUMER = {"enable.auto.commit": False, "enable.auto.offset.store": False}


def _base(settings: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap_servers, **settings.extra}


def consumer(settings: KafkaSettings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer of ``group_id`` with cooperative-sticky assignment and manual commits."""
    config = {
        **_base(settings),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        **overrides,
        **_FORCED_CONSUMER,
    }
    return Consumer(config)


def producer(settings: KafkaSettings, **overrides: Any) -> Producer:
    """An idempotent producer that waits for every in-sync replica."""
    config = {**_base(settings), "enable.idempotence": True, "acks": "all", **overrides}
    return Producer(config)


def admin_client(settings: KafkaSettings) -> Admin:
    return Admin(_base(settings))
