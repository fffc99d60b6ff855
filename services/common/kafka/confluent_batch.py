"""The lake writer's consumer on confluent_kafka alone: :class:`~services.common.kafka.batch_consumer.BatchConsumer`
over ``Consumer.consume``.

It is the path when the package was installed without a Rust toolchain, and the one for configurations the
native consumer cannot honour (OAUTHBEARER or GSSAPI, callbacks such as ``oauth_cb`` and ``stats_cb``).
Each record is a Python object here; the batch is turned into the same columns the native consumer hands
over, so everything after ``consume`` is the same code on both paths.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from services.common.kafka.batch_consumer import CommitResult, Fetch, RebalanceCallback
from services.common.logging import get_logger

__all__ = ["ConfluentBatchConsumer"]

log = get_logger(__name__)


class ConfluentBatchConsumer:
    """A confluent_kafka group consumer whose ``consume`` returns a :class:`Fetch`.

    Rebalance callbacks receive this consumer (not the wrapped one), so they can seek, pause and read
    positions through the same interface as on the native path.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._consumer = Consumer(config)

    def subscribe(
        self,
        topics: list[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Subscribes to ``topics`` (``^`` starts a pattern); without ``on_lost``, lost partitions go to
        ``on_revoke``, as in confluent_kafka."""
        callbacks: dict[str, Any] = {}
        for name, callback in (("on_assign", on_assign), ("on_revoke", on_revoke), ("on_lost", on_lost)):
            if callback is not None:
                callbacks[name] = self._relay(callback)
        self._consumer.subscribe(topics, **callbacks)

    def _relay(self, callback: RebalanceCallback) -> Any:
        return lambda _consumer, partitions: callback(self, list(partitions))

    def consume(self, num_messages: int, timeout: float) -> Fetch:
        """Up to ``num_messages``, waiting up to ``timeout`` seconds (a negative one does not wait). A fatal
        error raises; others are logged and skipped, as on the native path."""
        messages: list[Message] = []
        for message in self._consumer.consume(num_messages, max(0.0, timeout)):
            error = message.error()
            if error is None:
                messages.append(message)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka.consume_error", code=error.code(), name=error.name(), reason=error.str())
        return Fetch.of_messages(messages)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> list[CommitResult]:
        """Commits synchronously; each partition's outcome comes back (see :class:`CommitResult`)."""
        if asynchronous:
            raise ValueError("ConfluentBatchConsumer commits synchronously only")
        committed = self._consumer.commit(offsets=offsets, asynchronous=False) or []
        return [CommitResult(tp.topic, tp.partition, tp.offset, tp.error) for tp in committed]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._consumer.pause(partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._consumer.resume(partitions)

    def seek(self, partition: TopicPartition) -> None:
        """The partition's next message is the one at ``partition.offset``."""
        self._consumer.seek(partition)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return list(self._consumer.position(partitions))

    def get_watermark_offsets(self, partition: TopicPartition, cached: bool = True) -> tuple[int, int]:
        """The low and high watermarks last fetched (no broker request: ``cached`` must be true)."""
        if not cached:
            raise ValueError("ConfluentBatchConsumer reads cached watermarks only")
        found = self._consumer.get_watermark_offsets(partition, cached=True)
        return (-1001, -1001) if found is None else (int(found[0]), int(found[1]))

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def close(self) -> None:
        """Leaves the group (the final ``on_revoke`` runs first)."""
        self._consumer.close()
