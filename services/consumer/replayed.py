"""Records of the replay topic ``_cdcflow.replay.<group>``, as batches of their original topics.

The DLQ tool republishes a dead-lettered record there with its original key, value and headers plus
``cdcflow.replayed.from`` (``services/common/replay.py``). The writer decodes it as a record of its original
topic, at its original partition and offset: those become ``_kafka_topic/_kafka_partition/_kafka_offset``,
the idempotency key bronze de-duplicates on, so a record replayed twice is loaded once. Everything else about
the record (its message for the DLQ, should it fail again) stays the replay topic's: a record that fails
again goes back to the DLQ with the replay topic as its ``cdcflow.source.*`` and its ``cdcflow.replayed.from``
and ``cdcflow.replay.count`` headers, the same record to the DLQ tool.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from services.common.debezium.records import DecodeFailure, Reason
from services.common.kafka import Message
from services.common.kafka.message_columns import MessageBatch
from services.common.replay import REPLAYED_FROM, replayed_from

__all__ = ["by_original_topic", "under_original_topics"]


def by_original_topic(batch: MessageBatch) -> tuple[dict[str, MessageBatch], list[DecodeFailure]]:
    """The records of ``batch`` (read from the replay topic) grouped by original topic, each group at its
    original partitions and offsets, in (partition, offset) order; a record without a valid
    ``cdcflow.replayed.from`` header is a failure (it cannot be put anywhere)."""
    rows: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # topic → (partition, offset, index)
    failures = []
    for index in range(len(batch)):
        message = batch.message(index)
        original = replayed_from(message.headers())
        if original is None:
            detail = (
                f"a record of the replay topic without a valid {REPLAYED_FROM} header (<topic>:<partition>:<offset>)"
            )
            failures.append(DecodeFailure(message, Reason.MISSING_SOURCE, detail, "ReplayError"))
            continue
        topic, partition, offset = original
        rows[topic].append((partition, offset, index))
    return {topic: _at_original(batch, sorted(found)) for topic, found in rows.items()}, failures


def _at_original(batch: MessageBatch, found: list[tuple[int, int, int]]) -> MessageBatch:
    indices = np.array([index for _, _, index in found], dtype=np.int64)
    return replace(
        batch.take(indices),
        partitions=np.array([partition for partition, _, _ in found], dtype=np.int32),
        offsets=np.array([offset for _, offset, _ in found], dtype=np.int64),
    )


def under_original_topics(records: dict[str, list[Message]], replay_topic: str) -> dict[str, list[Message]]:
    """``records`` by the topic to decode them as: the replay topic's under their original topics (the
    crash-loop guard re-decodes them as the writer did); the messages stay the replay topic's."""
    regrouped = {topic: list(found) for topic, found in records.items() if topic != replay_topic}
    for message in records.get(replay_topic, []):
        original = replayed_from(message.headers())
        regrouped.setdefault(original[0] if original else replay_topic, []).append(message)
    return regrouped
