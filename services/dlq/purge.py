"""``cdcflow dlq purge``: move a DLQ's log start forward (Kafka DeleteRecords), after a dry run.

A record still pending (neither replayed nor parked) is kept unless asked: each partition's cut stops at its
first pending record, so a purge never deletes what nobody has dealt with by accident.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from services.common.kafka import KafkaException, delete_records_before, ensure_topics, producer, topic_watermarks
from services.dlq.app import DlqTool, kafka_errors
from services.dlq.errors import DlqNotFoundError
from services.dlq.progress import audit_topic
from services.dlq.run import who
from services.dlq.selection import identities, representative, status_of

__all__ = ["PartitionCut", "execute_purge", "plan_purge"]


@dataclass(frozen=True, slots=True)
class PartitionCut:
    partition: int
    log_start: int
    end: int
    delete_before: int  # the new log start
    records: int  # DLQ records deleted
    pending: int  # of those, records nobody replayed or parked yet
    held_by_pending: bool  # the cut stopped early at a pending record


def plan_purge(
    tool: DlqTool, *, before_ms: int | None, before_offsets: dict[int, int] | None, include_pending: bool
) -> list[PartitionCut]:
    """Where each DLQ partition would start after the purge (nothing is changed)."""
    try:
        with kafka_errors(f"reading {tool.topic}"):
            marks = topic_watermarks(tool.kafka, tool.topic, timeout_s=tool.settings.timeout_s)
    except KeyError:
        raise DlqNotFoundError(f"group {tool.group!r} has no DLQ topic {tool.topic}") from None
    records = tool.records()
    progress = tool.progress()
    # a record without source headers can be neither replayed nor told apart from another: it holds the cut
    # as a pending one does, until --include-pending
    pending_at = {r.dlq_coordinate for r in records if r.original is None}
    for original, copies in identities(records).items():
        if status_of(copies, progress.get(original)) == "pending":
            top = representative(copies).replay_count
            pending_at |= {c.dlq_coordinate for c in copies if c.replay_count == top}
    cuts = []
    for partition, (low, high) in marks.items():
        mine = [r for r in records if r.dlq_partition == partition]
        if before_offsets is not None:
            wanted = min(max(before_offsets.get(partition, low), low), high)
        else:
            assert before_ms is not None
            wanted = next((r.dlq_offset for r in mine if r.error_time_ms >= before_ms), high)
        first_pending = next((r.dlq_offset for r in mine if r.dlq_coordinate in pending_at), high)
        cut = wanted if include_pending else min(wanted, first_pending)
        gone = [r for r in mine if r.dlq_offset < cut]
        cuts.append(
            PartitionCut(
                partition=partition,
                log_start=low,
                end=high,
                delete_before=max(cut, low),
                records=len(gone),
                pending=sum(1 for r in gone if r.dlq_coordinate in pending_at),
                held_by_pending=not include_pending and first_pending < wanted,
            )
        )
    return cuts


def execute_purge(tool: DlqTool, cuts: list[PartitionCut], arguments: list[str]) -> dict[int, int]:
    """Delete below each cut; appends an audit record. Returns the new log start of each partition touched."""
    wanted = {c.partition: c.delete_before for c in cuts if c.delete_before > c.log_start}
    with kafka_errors(f"deleting records of {tool.topic}"):
        starts = delete_records_before(tool.kafka, tool.topic, wanted, timeout_s=tool.settings.timeout_s)
        _audit_purge(tool, cuts, wanted, arguments)
    return starts


def _audit_purge(tool: DlqTool, cuts: list[PartitionCut], wanted: dict[int, int], arguments: list[str]) -> None:
    audit = {
        "action": "purge",
        "group": tool.group,
        "who": who(),
        "arguments": arguments,
        "partitions": [asdict(c) for c in cuts if c.partition in wanted],
        "deleted": sum(c.records for c in cuts if c.partition in wanted),
        "at_ms": time.time_ns() // 1_000_000,
    }
    ensure_topics(tool.kafka, [audit_topic(tool.group)], config={"cleanup.policy": "compact"})
    client = producer(tool.kafka)
    client.produce(
        audit_topic(tool.group),
        key=f"purge:{audit['at_ms']}".encode(),
        value=json.dumps(audit, sort_keys=True).encode(),
    )
    if client.flush(tool.settings.timeout_s):
        raise KafkaException(f"the purge's audit record was not acknowledged within {tool.settings.timeout_s:g}s")
