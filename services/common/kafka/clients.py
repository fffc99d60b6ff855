"""Factories for confluent-kafka clients built from :class:`KafkaSettings`.

Auto-commit is always off: only a checkpoint, after the data is durable, commits offsets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient as Admin
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource  # public, not re-exported
from confluent_kafka.admin._metadata import TopicMetadata  # public, not re-exported
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from services.common.errors import TransientError
from services.common.kafka.batch_consumer import LIBRDKAFKA_LOG, BatchConsumer, NativeBatchConsumer
from services.common.settings import KafkaSettings

__all__ = [
    "Admin",
    "Consumer",
    "KafkaException",
    "KafkaUnreachableError",
    "Message",
    "Producer",
    "TopicPartition",
    "admin_client",
    "batch_consumer",
    "consumer",
    "end_positions",
    "ensure_topic_minimum",
    "ensure_topics",
    "producer",
    "watermarks",
]

# librdkafka's answers when no broker could be asked at all
_UNREACHABLE = frozenset(
    {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}
)


class KafkaUnreachableError(TransientError):
    """No broker answered: Kafka is down or still starting, or the bootstrap servers point elsewhere."""


_FORCED_CONSUMER = {"enable.auto.commit": False, "enable.auto.offset.store": False}

MAX_RECORD_BYTES = 16 << 20
"""The largest record cdcflow's topics carry: a change event of a row holding documents or images of several
MiB. Kafka's defaults stop near 1 MB, and a Debezium task whose record is refused fails, which stops the capture
of its whole source. So the topics cdcflow creates, the topics the connector files create
(``topic.creation.default.max.message.bytes``), the connectors' producers
(``producer.override.max.request.size``) and cdcflow's producers all take records up to this size."""


# Every producer's: idempotent, acknowledged by every in-sync replica, records up to the topics' limit.
PRODUCER_DEFAULTS: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "message.max.bytes": MAX_RECORD_BYTES}


def _base(settings: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap_servers, "logger": LIBRDKAFKA_LOG, **settings.extra}


def _consumer_config(
    settings: KafkaSettings, group_id: str, overrides: dict[str, Any], tuning: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        **(tuning or {}),
        **_base(settings),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        **overrides,
        **_FORCED_CONSUMER,
    }


def consumer(settings: KafkaSettings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer of ``group_id`` with cooperative-sticky assignment and manual commits."""
    return Consumer(_consumer_config(settings, group_id, overrides))


def batch_consumer(
    settings: KafkaSettings,
    group_id: str,
    *,
    native: bool = True,
    tuning: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> BatchConsumer:
    """The same consumer as :func:`consumer`, whose ``consume`` returns a batch as columns: on the native
    consumer, or with ``native=False`` on confluent_kafka's.

    ``tuning`` is the caller's choice of librdkafka settings an operator may still override through
    ``kafka.extra``; ``overrides`` win over it (what the caller's code depends on).
    """
    config = _consumer_config(settings, group_id, overrides, tuning)
    if native:
        return NativeBatchConsumer(config)
    from services.common.kafka.confluent_batch import ConfluentBatchConsumer

    return ConfluentBatchConsumer(config)


def producer(settings: KafkaSettings, **overrides: Any) -> Producer:
    """An idempotent producer that waits for every in-sync replica."""
    return Producer({**_base(settings), **PRODUCER_DEFAULTS, **overrides})


def admin_client(settings: KafkaSettings, **overrides: Any) -> Admin:
    return Admin({**_base(settings), **overrides})


def ensure_topics(
    settings: KafkaSettings, names: list[str], *, config: dict[str, str] | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet (partitions and replication from settings, records up to
    :data:`MAX_RECORD_BYTES` unless ``config`` says otherwise); returns the new ones.

    Raises :class:`KafkaUnreachableError` when no broker answers within ``timeout_s``."""
    admin = admin_client(settings)
    existing = _topic_names(admin, settings, timeout_s)
    wanted = [n for n in names if n not in existing]
    if not wanted:
        # made a moment ago by another client, perhaps: usable only once every partition has its leader
        _wait_for_leaders(admin, names, timeout_s)
        return []
    topic_config = {"max.message.bytes": str(MAX_RECORD_BYTES), **(config or {})}
    futures = admin.create_topics(
        [NewTopic(n, settings.topic_partitions, settings.replication_factor, config=topic_config) for n in wanted],
        operation_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # someone else won the race
                raise
    _wait_for_leaders(admin, wanted, timeout_s)
    return created


def _topic_names(admin: Admin, settings: KafkaSettings, timeout_s: float) -> set[str]:
    try:
        return set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() not in _UNREACHABLE:
            raise
        raise KafkaUnreachableError(
            f"no Kafka broker at {settings.bootstrap_servers} answered within {timeout_s:g} s ({error.str()}): "
            "is Kafka running, and is CDCFLOW_KAFKA__BOOTSTRAP_SERVERS right?"
        ) from exc


def ensure_topic_minimum(
    settings: KafkaSettings, topic: str, key: str, minimum: int, *, timeout_s: float = 30.0
) -> int:
    """Raise a numeric topic config (e.g. ``max.message.bytes``) of an existing topic to at least ``minimum``.

    A topic created earlier, by hand or by an older release, keeps whatever it was created with; creating
    it again changes nothing. Returns the value now in force. Raises :class:`KafkaException` when the
    broker refuses the change (e.g. no ALTER_CONFIGS permission on the topic).
    """
    admin = admin_client(settings)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    (future,) = admin.describe_configs([resource], request_timeout=timeout_s).values()
    entries = future.result(timeout=timeout_s)
    current = int(entries[key].value) if key in entries and entries[key].value is not None else 0
    if current >= minimum:
        return current
    change = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(key, str(minimum), incremental_operation=AlterConfigOpType.SET)],
    )
    (altered,) = admin.incremental_alter_configs([change], request_timeout=timeout_s).values()
    altered.result(timeout=timeout_s)
    return minimum


def _wait_for_leaders(admin: Admin, topics: list[str], timeout_s: float) -> None:
    """A new topic is usable once every partition has a leader; until then reads fail with NOT_LEADER."""
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s).topics
        ready = all(
            name in metadata
            and metadata[name].error is None
            and metadata[name].partitions
            and all(p.leader >= 0 and p.error is None for p in metadata[name].partitions.values())
            for name in topics
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no leader for {topics} after {timeout_s}s"))
        time.sleep(0.1)


def end_positions(client: Consumer, topics: list[str], *, timeout_s: float = 30.0) -> list[TopicPartition]:
    """Every partition of ``topics`` positioned at its current end (high watermark).

    A topic the broker does not list yet (Debezium creates one with its table's first change) and a
    partition whose leader is still being elected answer for a while: both are retried until ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    metadata = _listed(client, topics, deadline)
    positions = []
    for topic in topics:
        for partition in sorted(metadata[topic].partitions):
            left = max(0.1, deadline - time.monotonic())
            _, high = watermarks(client, TopicPartition(topic, partition), timeout_s=left)
            positions.append(TopicPartition(topic, partition, high))
    return positions


def _listed(client: Consumer, topics: list[str], deadline: float) -> dict[str, TopicMetadata]:
    """The cluster's topic metadata once it lists every one of ``topics`` with its partitions."""
    while True:
        metadata: dict[str, TopicMetadata] = client.list_topics(timeout=max(0.1, deadline - time.monotonic())).topics
        missing = [t for t in topics if t not in metadata or not metadata[t].partitions]
        if not missing:
            return metadata
        if time.monotonic() > deadline:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no such topic: {', '.join(missing)}"))
        time.sleep(0.2)


def watermarks(client: Consumer, partition: TopicPartition, *, timeout_s: float = 30.0) -> tuple[int, int]:
    """The partition's low and high watermarks from the broker. A leader being elected, or not yet known to
    this client (a topic created a moment ago, a broker restarted), answers NOT_LEADER_FOR_PARTITION for a
    while: that and other retriable errors are retried until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = client.get_watermark_offsets(partition, timeout=max(0.1, deadline - time.monotonic()))
            return int(low), int(high)
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
