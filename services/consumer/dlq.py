"""The dead-letter queue of a consumer group: ``_cdcflow.dlq.<group>``.

A bad record is re-published unchanged (key, value, headers, timestamp) plus ``cdcflow.error.*`` and
``cdcflow.source.*`` headers. The source offset is committed only after the DLQ record is acknowledged,
so a DLQ'd record is never lost; acknowledged ones are remembered so a retry does not publish them twice.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from services.common.debezium.records import DecodeFailure, Headers
from services.common.kafka import KafkaException, Producer, ensure_topics, producer
from services.common.settings import KafkaSettings
from services.consumer.errors import DlqDeliveryError

__all__ = ["DlqPublisher", "dlq_topic"]

MAX_DLQ_MESSAGE_BYTES = 16 << 20
_MAX_DETAIL = 2_000


def dlq_topic(group_id: str) -> str:
    return f"_cdcflow.dlq.{group_id}"


def _original_headers(headers: Headers | None) -> list[tuple[str, str | bytes | None]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


@dataclass
class _Pending:
    sent: int = 0
    acked: set[int] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)


class DlqPublisher:
    def __init__(self, settings: KafkaSettings, group_id: str, worker_id: str) -> None:
        self.topic = dlq_topic(group_id)
        self._worker = worker_id
        ensure_topics(settings, [self.topic], config={"max.message.bytes": str(MAX_DLQ_MESSAGE_BYTES)})
        self._producer: Producer = producer(
            settings, **{"message.max.bytes": MAX_DLQ_MESSAGE_BYTES + (1 << 20), "linger.ms": 5}
        )
        self._pending: dict[tuple[str, int], _Pending] = defaultdict(_Pending)

    def publish(self, failure: DecodeFailure) -> bool:
        """Queue one bad record; False when it was already acknowledged earlier (a retried batch)."""
        message = failure.message
        topic, partition, offset = str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
        pending = self._pending[(topic, partition)]
        if offset in pending.acked:
            return False
        headers = _original_headers(message.headers()) + self._error_headers(failure, topic, partition, offset)
        _, timestamp = message.timestamp()
        pending.sent += 1

        def delivered(error: Any, _msg: Any) -> None:
            if error is None:
                pending.acked.add(offset)
            else:
                pending.failed.append(f"offset {offset}: {error}")

        kwargs: dict[str, Any] = {"timestamp": timestamp} if timestamp > 0 else {}
        self._producer.produce(
            self.topic, value=message.value(), key=message.key(), headers=headers, on_delivery=delivered, **kwargs
        )
        self._producer.poll(0)
        return True

    def _error_headers(
        self, failure: DecodeFailure, topic: str, partition: int, offset: int
    ) -> list[tuple[str, str | bytes | None]]:
        _, timestamp = failure.message.timestamp()
        return [
            ("cdcflow.error.class", failure.error_class),
            ("cdcflow.error.reason", failure.reason),
            ("cdcflow.error.message", failure.detail[:_MAX_DETAIL]),
            ("cdcflow.error.stage", failure.stage),
            ("cdcflow.error.time", str(time.time_ns() // 1_000_000)),
            ("cdcflow.source.topic", topic),
            ("cdcflow.source.partition", str(partition)),
            ("cdcflow.source.offset", str(offset)),
            ("cdcflow.source.timestamp", str(timestamp)),
            ("cdcflow.worker", self._worker),
        ]

    def confirm(self, topic: str, partition: int, timeout_s: float) -> None:
        """Block until every DLQ record of the partition is acknowledged; raise if one failed."""
        pending = self._pending.get((topic, partition))
        if pending is None or (pending.sent == len(pending.acked) and not pending.failed):
            return
        remaining = self._producer.flush(timeout_s)
        if pending.failed:
            failed, pending.failed = pending.failed, []
            pending.sent = len(pending.acked)
            raise DlqDeliveryError(f"DLQ publish failed for {topic}[{partition}]: {failed[0]}")
        if remaining:
            raise DlqDeliveryError(f"{remaining} DLQ record(s) still unacknowledged after {timeout_s}s")

    def forget_below(self, topic: str, partition: int, committed: int) -> None:
        """Acknowledged offsets below the committed position can never be retried again."""
        pending = self._pending.get((topic, partition))
        if pending is not None:
            pending.acked = {o for o in pending.acked if o >= committed}
            pending.sent = len(pending.acked)

    def drop(self, topic: str, partition: int) -> None:
        self._pending.pop((topic, partition), None)

    def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(KafkaException):  # best effort on the way out
            self._producer.flush(timeout_s)
