"""Which DLQ records a replay takes, and the plan id that names exactly that selection.

A record is counted, selected and replayed once per original coordinate, whatever number of copies the DLQ
holds. Of its copies the one with the highest ``cdcflow.replay.count`` stands for it (a record replayed and
failed again); among copies with the same count (a writer killed between the DLQ acknowledgement and its
commit published it twice) the first in the DLQ.

The plan id is a hash of the selection itself — every chosen DLQ record with its action, the filters, the
target and the parking threshold — so ``--execute <plan id>`` replays exactly what the dry run showed, and is
refused when the same filters now resolve to anything else (a new matching DLQ record, another replay acted
on a selected record meanwhile, a purge). Records this plan already acted on stay in its selection, with
the copy it acted on: a plan interrupted by ``kill -9`` resolves to the same id and goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from services.common.replay import Coordinate, parse_coordinate
from services.dlq.progress import Progress, ProgressEntry
from services.dlq.records import DlqRecord

__all__ = ["Filters", "Plan", "PlanItem", "identities", "parse_offsets", "resolve", "status_of"]

Action = Literal["replay", "park"]
Status = Literal["pending", "replayed", "parked"]


@dataclass(frozen=True, slots=True)
class OffsetSpec:
    """``P:O``, ``P:A-B`` (DLQ partition and offsets, inclusive) or ``topic:P:O`` (an original coordinate)."""

    dlq_partition: int | None = None
    first: int = 0
    last: int = 0
    original: Coordinate | None = None

    def matches(self, record: DlqRecord) -> bool:
        if self.original is not None:
            return record.original == self.original
        return record.dlq_partition == self.dlq_partition and self.first <= record.dlq_offset <= self.last

    def text(self) -> str:
        if self.original is not None:
            return ":".join(map(str, self.original))
        return f"{self.dlq_partition}:{self.first}-{self.last}"


def parse_offsets(text: str) -> list[OffsetSpec]:
    """``--offsets``: a comma-separated list of ``P:O``, ``P:A-B`` or ``topic:P:O``. ValueError if malformed."""
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        original = parse_coordinate(item)
        if original is not None and not original[0].isdigit():
            specs.append(OffsetSpec(original=original))
            continue
        partition, sep, offsets = item.partition(":")
        first, dash, last = offsets.partition("-")
        if not (sep and partition.isdigit() and first.isdigit() and (not dash or last.isdigit())):
            raise ValueError(f"{item!r} is not P:O, P:A-B (DLQ partition and offsets) or topic:P:O")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"{item!r}: the range ends before it starts")
        specs.append(OffsetSpec(dlq_partition=int(partition), first=low, last=high))
    return specs


@dataclass(frozen=True, slots=True)
class Filters:
    reasons: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    since_ms: int | None = None  # dead-lettered at or after
    until_ms: int | None = None  # dead-lettered before
    offsets: tuple[OffsetSpec, ...] = ()
    limit: int | None = None

    def matches(self, record: DlqRecord) -> bool:
        return (
            (not self.reasons or record.reason in self.reasons)
            and (not self.tables or record.table() in self.tables)
            and (self.since_ms is None or record.error_time_ms >= self.since_ms)
            and (self.until_ms is None or record.error_time_ms < self.until_ms)
            and (not self.offsets or any(spec.matches(record) for spec in self.offsets))
        )

    def canonical(self) -> dict[str, object]:
        return {
            "reasons": sorted(set(self.reasons)),
            "tables": sorted(set(self.tables)),
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "offsets": sorted(spec.text() for spec in self.offsets),
            "limit": self.limit,
        }


@dataclass(frozen=True, slots=True)
class PlanItem:
    record: DlqRecord
    action: Action
    done: bool  # this plan already acted on it (an interrupted run)

    @property
    def original(self) -> Coordinate:
        assert self.record.original is not None
        return self.record.original


@dataclass(frozen=True, slots=True)
class Plan:
    group: str
    target: str  # "replay" (the replay topic) or "source"
    max_replays: int
    filters: Filters
    items: list[PlanItem]
    plan_id: str
    duplicates: int = 0  # DLQ copies of selected records left out (the same record published twice)
    by: dict[str, int] = field(default_factory=dict)
    read_up_to: dict[int, int] = field(default_factory=dict)  # the DLQ end offsets read (shown, not hashed)

    def count(self, action: Action, *, done: bool | None = None) -> int:
        return sum(1 for i in self.items if i.action == action and (done is None or i.done == done))

    def todo(self) -> list[PlanItem]:
        return [i for i in self.items if not i.done]


def identities(records: Iterable[DlqRecord]) -> dict[Coordinate, list[DlqRecord]]:
    """Each original coordinate's copies in the DLQ, in (replay count, DLQ partition, DLQ offset) order;
    records without an original coordinate are left out."""
    copies: dict[Coordinate, list[DlqRecord]] = defaultdict(list)
    for record in records:
        if record.original is not None:
            copies[record.original].append(record)
    for found in copies.values():
        found.sort(key=lambda r: (r.replay_count, r.dlq_partition, r.dlq_offset))
    return copies


def representative(copies: list[DlqRecord]) -> DlqRecord:
    """The copy that stands for the record: the highest replay count, the first in the DLQ among those."""
    top = copies[-1].replay_count
    return next(c for c in copies if c.replay_count == top)


def status_of(copies: list[DlqRecord], entry: ProgressEntry | None) -> Status:
    latest = representative(copies)
    if entry is None or not entry.handled(latest.replay_count):
        return "pending"
    return "parked" if entry.parked and entry.replays <= latest.replay_count else "replayed"


def resolve(
    group: str,
    records: Iterable[DlqRecord],
    progress: Progress,
    filters: Filters,
    *,
    target: str,
    max_replays: int,
    for_plan: str | None = None,
) -> Plan:
    """The plan these filters select now. ``for_plan``: the id being executed, whose own earlier actions keep
    their records in the selection (see the module docstring)."""
    copies = identities(records)
    chosen: list[tuple[DlqRecord, bool]] = []
    for original, found in copies.items():
        entry = progress.get(original)
        pinned = _pinned_copy(found, entry, for_plan)
        if pinned is not None:
            chosen.append((pinned, True))
            continue
        record = representative(found)
        if entry is not None and entry.handled(record.replay_count):
            continue  # replayed or parked already by another plan
        chosen.append((record, False))
    selected = sorted(
        ((r, done) for r, done in chosen if filters.matches(r)), key=lambda item: item[0].original or ("", 0, 0)
    )
    if filters.limit is not None:
        selected = selected[: filters.limit]
    items = [PlanItem(r, "park" if r.replay_count >= max_replays else "replay", done) for r, done in selected]
    duplicates = sum(len(copies[i.original]) - 1 for i in items)
    plan_id = _plan_id(group, target, max_replays, filters, items)
    by: dict[str, int] = defaultdict(int)
    for item in items:
        by[f"{item.record.reason} {item.record.table()}"] += 1
    return Plan(group, target, max_replays, filters, items, plan_id, duplicates, dict(sorted(by.items())))


def _pinned_copy(found: list[DlqRecord], entry: ProgressEntry | None, plan: str | None) -> DlqRecord | None:
    """The copy ``plan`` acted on, if it acted on this record (and that copy is still in the DLQ)."""
    if plan is None or entry is None or entry.plan != plan:
        return None
    return next((c for c in found if f"{c.dlq_partition}:{c.dlq_offset}" == entry.dlq), None)


def _plan_id(group: str, target: str, max_replays: int, filters: Filters, items: list[PlanItem]) -> str:
    document = {
        "group": group,
        "target": target,
        "max_replays": max_replays,
        "filters": filters.canonical(),
        "items": [[i.record.dlq_partition, i.record.dlq_offset, i.action] for i in items],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
