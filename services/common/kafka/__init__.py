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
from services.common.kafka.transactions import (
    ProducerFencedError,
    TopicRead,
    TransactionalProducer,
    delete_records_before,
    is_fenced,
    read_record,
    read_topic,
    topic_names,
    topic_watermarks,
)

__all__ = [
    "Admin",
    "BatchConsumer",
    "Consumer",
    "Fetch",
    "KafkaException",
    "Message",
    "Producer",
    "ProducerFencedError",
    "TopicPartition",
    "TopicRead",
    "TransactionalProducer",
    "admin_client",
    "batch_consumer",
    "consumer",
    "delete_records_before",
    "end_positions",
    "ensure_topics",
    "is_fenced",
    "producer",
    "read_record",
    "read_topic",
    "topic_names",
    "topic_watermarks",
]
