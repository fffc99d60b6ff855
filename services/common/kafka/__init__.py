"""The one place that imports the Kafka client library: typed factories for consumers, producers, admin."""

from services.common.kafka.batch_consumer import BatchConsumer, Fetch
from services.common.kafka.clients import (
    Admin,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
    admin_client,
    batch_consumer,
    consumer,
    end_positions,
    ensure_topics,
    producer,
)

__all__ = [
    "Admin",
    "BatchConsumer",
    "Consumer",
    "Fetch",
    "KafkaException",
    "Message",
    "Producer",
    "TopicPartition",
    "admin_client",
    "batch_consumer",
    "consumer",
    "end_positions",
    "ensure_topics",
    "producer",
]
