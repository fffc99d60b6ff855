"""One execution of a replay plan: batches of (replayed records, progress entries, audit record), each committed
in one Kafka transaction (see ``app.py`` for why that makes a replay exactly once)."""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.common.kafka import ProducerFencedError, TransactionalProducer, topic_watermarks
from services.common.logging import get_logger
from services.common.replay import REPLAY_COUNT, REPLAYED_FROM, format_coordinate
from services.dlq.progress import Progress, ProgressEntry, audit_topic, progress_topic
from services.dlq.ratelimit import Pacer, batch_size
from services.dlq.records import ValueOmittedError
from services.dlq.selection import Plan, PlanItem

if TYPE_CHECKING:
    from services.dlq.app import DlqTool

__all__ = ["VALUE_BYTES_PER_TRANSACTION", "ReplayRun", "who"]

log = get_logger(__name__)

VALUE_BYTES_PER_TRANSACTION = 64 << 20
"""The most value bytes read ahead of one transaction: the values left out of the DLQ are its largest."""


def who() -> dict[str, str]:
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname()}


@dataclass(frozen=True, slots=True)
class _Value:
    """A record's value to replay; ``park``: why it cannot be (the value is then None)."""

    value: bytes | None
    park: str = ""


class ReplayRun:
    """One execution of a plan: batches of (records, progress entries, audit record), each one transaction."""

    def __init__(
        self,
        tool: DlqTool,
        producer: TransactionalProducer,
        plan: Plan,
        *,
        progress: Progress,
        target: str,
        arguments: list[str],
        rate: float | None,
    ) -> None:
        self._tool = tool
        self._producer = producer
        self._plan = plan
        self._target = target
        self._arguments = arguments
        self._rate = rate
        self._partitions = _partition_count(tool, target) if target else 0
        self._started_ms = time.time_ns() // 1_000_000
        self.replayed = 0
        self.parked = 0
        # what earlier runs of this plan did (a run killed part-way): the audit counts the whole plan
        earlier = [progress.get(i.original) for i in plan.items if i.done]
        self._earlier_parked = sum(1 for e in earlier if e is not None and e.parked)
        self._earlier_replayed = len(earlier) - self._earlier_parked

    def all(self) -> None:
        todo = self._plan.todo()
        pacer = Pacer(self._rate)
        size = batch_size(self._rate)
        start = 0
        while True:
            # read before the transaction opens: a value left out of the DLQ is read back from its source
            # topic, one read a record, and a batch of them could outlast the transaction's timeout
            values = self._values(todo[start : start + size])
            batch = todo[start : start + len(values)]
            start += len(batch)
            pacer.take(len(batch))
            self._transact(batch, values, done=start >= len(todo))
            if start >= len(todo):
                return

    def _values(self, batch: list[PlanItem]) -> list[_Value]:
        """The values of a batch's first records, as many as :data:`VALUE_BYTES_PER_TRANSACTION` holds (at least
        one)."""
        values: list[_Value] = []
        size = 0
        for item in batch:
            if values and size >= VALUE_BYTES_PER_TRANSACTION:
                break
            value = self._value(item)
            size += len(value.value or b"")
            values.append(value)
        return values

    def _transact(self, batch: list[PlanItem], values: list[_Value], *, done: bool) -> None:
        self._producer.begin()
        try:
            counts = [self._act(item, value) for item, value in zip(batch, values, strict=True)]
            self._audit(done=done, pending=Counter(counts))
            self._producer.commit()
        except ProducerFencedError:
            raise
        except Exception:
            self._producer.abort()
            raise
        self.replayed += counts.count("replay")
        self.parked += counts.count("park")
        log.info("dlq.replay_batch", plan=self._plan.plan_id, records=len(batch), replayed=self.replayed)

    def _value(self, item: PlanItem) -> _Value:
        """The value to replay, or why the record is parked instead."""
        record = item.record
        if item.action == "park":
            return _Value(None, park=f"replayed {record.replay_count} times (max {self._plan.max_replays})")
        try:
            return _Value(record.original_value())
        except ValueOmittedError:
            value = self._tool.source_value(record)
            if value is None:
                return _Value(None, park="value left out of the DLQ and no longer in the source topic")
            return _Value(value)
        except ValueError as exc:
            return _Value(None, park=f"value unreadable: {exc}")

    def _act(self, item: PlanItem, value: _Value) -> str:
        record = item.record
        if value.park:
            self._progress(item, parked=True, note=value.park)
            return "park"
        topic, partition = self._destination(item)
        headers = [
            *record.original_headers(),
            (REPLAY_COUNT, str(record.replay_count + 1)),
            (REPLAYED_FROM, format_coordinate(item.original)),
        ]
        # stamped now, not with the original time: a record older than the target's retention would be deleted
        # before the writer reads it (the lake's dt/hour come from the event's own commit time anyway)
        self._producer.produce(topic, key=record.key, value=value.value, headers=headers, partition=partition)
        self._progress(item, parked=False, note="")
        return "replay"

    def _destination(self, item: PlanItem) -> tuple[str, int]:
        topic, partition, _ = item.original
        if not self._target:
            return topic, partition  # the source partition: a key's changes stay in one partition
        return self._target, partition % self._partitions

    def _progress(self, item: PlanItem, *, parked: bool, note: str) -> None:
        record = item.record
        entry = ProgressEntry(
            replays=record.replay_count + (0 if parked else 1),
            parked=parked,
            plan=self._plan.plan_id,
            dlq=f"{record.dlq_partition}:{record.dlq_offset}",
            target=self._target or item.original[0],
            note=note,
            at_ms=time.time_ns() // 1_000_000,
        )
        self._producer.produce(progress_topic(self._tool.group), key=Progress.key(item.original), value=entry.encode())

    def _audit(self, *, done: bool, pending: Counter[str]) -> None:
        plan = self._plan
        replayed, parked = self.replayed + pending["replay"], self.parked + pending["park"]
        document = {
            "plan": plan.plan_id,
            "group": plan.group,
            "who": who(),
            "arguments": self._arguments,
            "filters": plan.filters.canonical(),
            "target": self._target or "source",
            "max_replays": plan.max_replays,
            "status": "done" if done else "running",
            "selected": len(plan.items),
            "replayed": self._earlier_replayed + replayed,
            "parked": self._earlier_parked + parked,
            "this_run": {"replayed": replayed, "parked": parked},
            "started_ms": self._started_ms,
            "updated_ms": time.time_ns() // 1_000_000,
        }
        self._producer.produce(
            audit_topic(plan.group), key=plan.plan_id.encode(), value=json.dumps(document, sort_keys=True).encode()
        )


def _partition_count(tool: DlqTool, topic: str) -> int:
    return len(topic_watermarks(tool.kafka, topic))
