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

import json
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
)
from services.common.replay import parse_coordinate, replay_topic
from services.common.settings import DlqSettings, KafkaSettings
from services.dlq.errors import (
    DlqNotFoundError,
    DlqToolError,
    KafkaFailedError,
    PlanMismatchError,
    RecordNotFoundError,
    ReplayFencedError,
)
from services.dlq.progress import Progress, audit_topic, progress_topic
from services.dlq.records import DlqRecord, pretty_value
from services.dlq.run import ReplayRun
from services.dlq.selection import Filters, Plan, identities, representative, resolve, status_of

__all__ = ["DlqTool", "ReplayOutcome", "dlq_topic_of", "kafka_errors"]

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


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    plan: Plan
    replayed: int  # by this run
    parked: int  # by this run
    target_topic: str
    seconds: float


class DlqTool:
    def __init__(self, kafka: KafkaSettings, settings: DlqSettings, group: str, *, enricher_group: str = "") -> None:
        self.kafka = kafka
        self.settings = settings
        self.group = group
        self._enricher_group = enricher_group  # a group whose DLQ no replay reaches
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
        self._check_replayable()
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
            run = ReplayRun(self, producer, plan, progress=progress, target=target, arguments=arguments, rate=rate)
            run.all()
        except ProducerFencedError as exc:
            raise ReplayFencedError(f"another replay of group {self.group} started and fenced this one: {exc}") from exc
        finally:
            producer.close()
        return ReplayOutcome(plan, run.replayed, run.parked, target or "source topics", time.monotonic() - began)

    def _check_replayable(self) -> None:
        """Refuse a replay of the enricher's DLQ: only the lake writer reads a replay topic, so its records would
        be marked replayed (and purged as done) while nothing reads them; republished to the source topic, the
        writer would land each transaction again and the enricher reject it again — they are records of the
        source it could not decode (not JSON, no envelope, no LSN, no key), which no fix downstream changes."""
        if self._enricher_group and self.group == self._enricher_group:
            raise DlqToolError(
                f"group {self.group} is the enricher's: no replay of its DLQ reaches it (only the lake writer reads a "
                "replay topic) and its records are source records it could not decode. Nothing was replayed: "
                "`cdcflow dlq show` them, fix what produced them, and purge them once reviewed (`cdcflow dlq purge "
                "--until <time> --include-pending`)."
            )

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


def _dlq_ref(ref: str) -> tuple[int, int] | None:
    partition, sep, offset = ref.partition(":")
    if sep and partition.isdigit() and offset.isdigit():
        return int(partition), int(offset)
    return None
