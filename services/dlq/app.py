"""The DLQ tool: read a group's DLQ, count it, show one record, plan and execute a replay.

Replay is exactly once. Each batch of replayed records, their progress entries
(``_cdcflow.dlq-progress.<group>``, see ``progress.py``) and the plan's audit record
(``_cdcflow.dlq-audit.<group>``) are committed in one Kafka transaction, whose transactional id is
``cdcflow-dlq-replay.<group>``. A replay killed mid-batch leaves an open transaction; the next replay of the
group registers the same id, which aborts it, and only then reads the progress: what was committed is skipped,
what was aborted is replayed. A second replay started while one runs fences the first (its next call fails),
so two never commit side by side.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from services.common.kafka import (
    KafkaException,
    ProducerFencedError,
    TransactionalProducer,
    ensure_topics,
    read_record,
    read_topic,
    topic_names,
    topic_watermarks,
)
from services.common.logging import get_logger
from services.common.replay import REPLAY_COUNT, REPLAYED_FROM, format_coordinate, parse_coordinate, replay_topic
from services.common.settings import DlqSettings, KafkaSettings
from services.dlq.errors import (
    DlqNotFoundError,
    KafkaFailedError,
    PlanMismatchError,
    RecordNotFoundError,
    ReplayFencedError,
)
from services.dlq.progress import Progress, ProgressEntry, audit_topic, progress_topic
from services.dlq.ratelimit import Pacer, batch_size
from services.dlq.records import DlqRecord, ValueOmittedError, pretty_value
from services.dlq.selection import Filters, Plan, PlanItem, identities, representative, resolve, status_of

__all__ = ["DlqTool", "ReplayOutcome", "dlq_topic_of", "kafka_errors", "who"]

log = get_logger(__name__)

_DLQ_PREFIX = "_cdcflow.dlq."
_COMPACTED = {"cleanup.policy": "compact"}


def dlq_topic_of(group: str) -> str:
    return f"{_DLQ_PREFIX}{group}"


@contextmanager
def kafka_errors(doing: str) -> Iterator[None]:
    """A Kafka failure as a named error (exit 2 with a sentence) instead of a traceback."""
    try:
        yield
    except ProducerFencedError:
        raise
    except KafkaException as exc:
        raise KafkaFailedError(f"{doing}: {exc}") from exc


def who() -> dict[str, str]:
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname()}


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    plan: Plan
    replayed: int  # by this run
    parked: int  # by this run
    target_topic: str
    seconds: float


class DlqTool:
    def __init__(self, kafka: KafkaSettings, settings: DlqSettings, group: str) -> None:
        self.kafka = kafka
        self.settings = settings
        self.group = group
        self.topic = dlq_topic_of(group)
        self.read_up_to: dict[str, dict[int, int]] = {}  # per group: each DLQ partition's end offset last read

    # --- reading ------------------------------------------------------------------------------------

    def records(self, group: str | None = None) -> list[DlqRecord]:
        group = group or self.group
        try:
            with kafka_errors(f"reading {dlq_topic_of(group)}"):
                read = read_topic(self.kafka, dlq_topic_of(group), timeout_s=self.settings.timeout_s)
        except KeyError:
            raise DlqNotFoundError(f"group {group!r} has no DLQ topic {dlq_topic_of(group)}") from None
        self.read_up_to[group] = {partition: high for partition, (_, high) in read.ends.items()}
        return [DlqRecord.of(m, group) for m in read.messages]

    def progress(self, group: str | None = None) -> Progress:
        try:
            with kafka_errors(f"reading {progress_topic(group or self.group)}"):
                read = read_topic(self.kafka, progress_topic(group or self.group), timeout_s=self.settings.timeout_s)
        except KeyError:
            return Progress()
        return Progress.of(read.messages)

    def groups(self) -> list[str]:
        """Every group with a DLQ topic."""
        with kafka_errors("listing the DLQ topics"):
            names = topic_names(self.kafka, _DLQ_PREFIX, timeout_s=self.settings.timeout_s)
            return [t.removeprefix(_DLQ_PREFIX) for t in names]

    # --- list and show --------------------------------------------------------------------------------

    def summary(self, groups: list[str]) -> dict[str, Any]:
        """Counts by group, reason, source table and hour, each original coordinate once."""
        return {"groups": [self._group_summary(g) for g in groups]}

    def _group_summary(self, group: str) -> dict[str, Any]:
        records = self.records(group)
        progress = self.progress(group)
        copies = identities(records)
        buckets: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
        totals: Counter[str] = Counter()
        for original, found in copies.items():
            record = representative(found)
            status = status_of(found, progress.get(original))
            bucket = buckets[(record.reason, record.table(), record.hour())]
            for counter in (bucket, totals):
                counter["records"] += 1
                counter[status] += 1
        same = sum(len(f) - len({c.replay_count for c in f}) for f in copies.values())
        rows = [
            {"reason": r, "table": t, "hour": h, **{k: c[k] for k in ("records", "pending", "replayed", "parked")}}
            for (r, t, h), c in sorted(buckets.items())
        ]
        return {
            "group": group,
            "topic": dlq_topic_of(group),
            "dlq_records": len(records),
            "records": totals["records"],
            "duplicates": same,
            "unidentified": sum(1 for r in records if r.original is None),
            "pending": totals["pending"],
            "replayed": totals["replayed"],
            "parked": totals["parked"],
            "by": rows,
        }

    def show(self, ref: str) -> list[dict[str, Any]]:
        """The DLQ records at ``P:O`` (DLQ partition and offset) or of ``topic:P:O`` (original coordinate)."""
        original = parse_coordinate(ref)
        dlq_ref = _dlq_ref(ref)
        if original is None and dlq_ref is None:
            raise RecordNotFoundError(f"{ref!r} is neither P:O (a DLQ record) nor topic:P:O (an original record)")
        records = self.records()
        if dlq_ref is not None:
            found = [r for r in records if r.dlq_coordinate == dlq_ref]
        else:
            found = [r for r in records if original in (r.original, r.source)]
        if not found:
            raise RecordNotFoundError(f"no record of {self.topic} at {ref}")
        progress = self.progress()
        shown = []
        for record in found:
            document = record.describe()
            entry = progress.get(record.original) if record.original else None
            document["progress"] = None if entry is None else json.loads(entry.encode())
            if record.omitted and record.source is not None:
                document["value"] = self._omitted_value(record)
            shown.append(document)
        return shown

    def _omitted_value(self, record: DlqRecord) -> Any:
        value = self.source_value(record)
        return pretty_value(value) if value is not None else {"unavailable": "no longer in the source topic"}

    # --- replay ---------------------------------------------------------------------------------------

    def plan(self, filters: Filters, *, to_source: bool, max_replays: int, for_plan: str | None = None) -> Plan:
        return self._resolve(filters, to_source=to_source, max_replays=max_replays, for_plan=for_plan)[0]

    def _resolve(
        self, filters: Filters, *, to_source: bool, max_replays: int, for_plan: str | None = None
    ) -> tuple[Plan, Progress]:
        progress = self.progress()
        target = "source" if to_source else "replay"
        plan = resolve(
            self.group, self.records(), progress, filters, target=target, max_replays=max_replays, for_plan=for_plan
        )
        return replace(plan, read_up_to=self.read_up_to.get(self.group, {})), progress

    def execute(
        self,
        plan_id: str,
        filters: Filters,
        *,
        to_source: bool,
        max_replays: int,
        rate: float | None,
        arguments: list[str],
    ) -> ReplayOutcome:
        """Replay exactly the selection ``plan_id`` names (see the module docstring)."""
        began = time.monotonic()
        self._check(plan_id, self.plan(filters, to_source=to_source, max_replays=max_replays, for_plan=plan_id))
        with kafka_errors(f"replaying plan {plan_id} (committed batches stay; the same --execute goes on)"):
            return self._execute(
                plan_id,
                filters,
                to_source=to_source,
                max_replays=max_replays,
                rate=rate,
                arguments=arguments,
                began=began,
            )

    def _execute(
        self,
        plan_id: str,
        filters: Filters,
        *,
        to_source: bool,
        max_replays: int,
        rate: float | None,
        arguments: list[str],
        began: float,
    ) -> ReplayOutcome:
        target = "" if to_source else replay_topic(self.group)
        ensure_topics(self.kafka, [progress_topic(self.group), audit_topic(self.group)], config=_COMPACTED)
        if target:
            ensure_topics(self.kafka, [target])
        producer = TransactionalProducer(
            self.kafka, f"cdcflow-dlq-replay.{self.group}", timeout_s=self.settings.timeout_s
        )
        try:
            producer.init()  # from here on, an earlier replay of this group can commit nothing more
            plan, progress = self._resolve(filters, to_source=to_source, max_replays=max_replays, for_plan=plan_id)
            self._check(plan_id, plan)
            run = _Run(self, producer, plan, progress=progress, target=target, arguments=arguments, rate=rate)
            run.all()
        except ProducerFencedError as exc:
            raise ReplayFencedError(f"another replay of group {self.group} started and fenced this one: {exc}") from exc
        finally:
            producer.close()
        return ReplayOutcome(plan, run.replayed, run.parked, target or "source topics", time.monotonic() - began)

    @staticmethod
    def _check(plan_id: str, plan: Plan) -> None:
        if plan.plan_id != plan_id:
            raise PlanMismatchError(
                f"these filters select plan {plan.plan_id} now ({len(plan.items)} record(s)), not {plan_id}: the DLQ"
                " or the replay progress changed since the dry run, or the filters differ. Nothing was replayed;"
                " review the new plan (run the dry run again), or bound the selection with --until."
            )

    def source_value(self, record: DlqRecord) -> bytes | None:
        """The value the DLQ left out, read from where the writer read it (None: gone, or not the same)."""
        if record.source is None:
            return None
        message = read_record(self.kafka, *record.source, timeout_s=self.settings.timeout_s)
        value = None if message is None else message.value()
        return value if record.matches_omitted(value) else None


class _Run:
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
        batches = [todo[i : i + size] for i in range(0, len(todo), size)] or [[]]
        for index, batch in enumerate(batches):
            pacer.take(len(batch))
            self._producer.begin()
            try:
                counts = [self._act(item) for item in batch]
                self._audit(done=index == len(batches) - 1, pending=Counter(counts))
                self._producer.commit()
            except ProducerFencedError:
                raise
            except Exception:
                self._producer.abort()
                raise
            self.replayed += counts.count("replay")
            self.parked += counts.count("park")
            log.info("dlq.replay_batch", plan=self._plan.plan_id, records=len(batch), replayed=self.replayed)

    def _act(self, item: PlanItem) -> str:
        record = item.record
        if item.action == "park":
            self._progress(
                item, parked=True, note=f"replayed {record.replay_count} times (max {self._plan.max_replays})"
            )
            return "park"
        try:
            value = record.original_value()
        except ValueOmittedError:
            value = self._tool.source_value(record)
            if value is None:
                self._progress(item, parked=True, note="value left out of the DLQ and no longer in the source topic")
                return "park"
        except ValueError as exc:
            self._progress(item, parked=True, note=f"value unreadable: {exc}")
            return "park"
        topic, partition = self._destination(item)
        headers = [
            *record.original_headers(),
            (REPLAY_COUNT, str(record.replay_count + 1)),
            (REPLAYED_FROM, format_coordinate(item.original)),
        ]
        # stamped now, not with the original time: a record older than the target's retention would be deleted
        # before the writer reads it (the lake's dt/hour come from the event's own commit time anyway)
        self._producer.produce(topic, key=record.key, value=value, headers=headers, partition=partition)
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


def _dlq_ref(ref: str) -> tuple[int, int] | None:
    partition, sep, offset = ref.partition(":")
    if sep and partition.isdigit() and offset.isdigit():
        return int(partition), int(offset)
    return None
