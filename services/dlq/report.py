"""What ``cdcflow dlq`` prints: tables for people, plain data for ``--json``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from services.common.replay import format_coordinate
from services.dlq.purge import PartitionCut
from services.dlq.selection import Plan

__all__ = ["plan_document", "print_plan", "print_purge", "print_summary"]


def print_summary(summary: dict[str, Any], out: Console) -> None:
    for group in summary["groups"]:
        out.print(
            f"[bold]{group['group']}[/] ({group['topic']}): {group['records']} record(s) — {group['pending']} pending,"
            f" {group['replayed']} replayed, {group['parked']} parked; {group['dlq_records']} DLQ record(s),"
            f" {group['duplicates']} duplicate(s) counted once"
            + (f", {group['unidentified']} without source headers" if group["unidentified"] else "")
        )
        if not group["by"]:
            continue
        table = Table("reason", "table", "hour (UTC)", "records", "pending", "replayed", "parked")
        for row in group["by"]:
            table.add_row(
                row["reason"],
                row["table"],
                row["hour"],
                *(str(row[k]) for k in ("records", "pending", "replayed", "parked")),
            )
        out.print(table)


def plan_document(plan: Plan) -> dict[str, Any]:
    todo = plan.todo()
    originals = [i.original for i in plan.items]
    dlq = sorted(i.record.dlq_coordinate for i in plan.items)
    return {
        "plan_id": plan.plan_id,
        "group": plan.group,
        "target": plan.target,
        "max_replays": plan.max_replays,
        "filters": plan.filters.canonical(),
        "selected": len(plan.items),
        "replay": plan.count("replay"),
        "park": plan.count("park"),
        "already_done": len(plan.items) - len(todo),
        "duplicates_skipped": plan.duplicates,
        "by_reason_table": plan.by,
        "first_original": format_coordinate(originals[0]) if originals else None,
        "last_original": format_coordinate(originals[-1]) if originals else None,
        "first_dlq": f"{dlq[0][0]}:{dlq[0][1]}" if dlq else None,
        "last_dlq": f"{dlq[-1][0]}:{dlq[-1][1]}" if dlq else None,
        "dlq_read_up_to": {str(p): end for p, end in sorted(plan.read_up_to.items())},
    }


def print_plan(plan: Plan, out: Console, command: str) -> None:
    doc = plan_document(plan)
    where = f"the replay topic _cdcflow.replay.{plan.group}" if plan.target == "replay" else "their source topics"
    out.print(
        f"plan [bold]{plan.plan_id}[/]: {doc['selected']} record(s) of _cdcflow.dlq.{plan.group} —"
        f" {doc['replay']} to replay to {where}, {doc['park']} to park (replayed {plan.max_replays}+ times)"
        + (f", {doc['already_done']} already done by this plan" if doc["already_done"] else "")
        + (f"; {doc['duplicates_skipped']} duplicate DLQ copies left out" if doc["duplicates_skipped"] else "")
    )
    if plan.items:
        out.print(f"  original: {doc['first_original']} … {doc['last_original']}")
        out.print(f"  DLQ:      {doc['first_dlq']} … {doc['last_dlq']} (partition:offset)")
        table = Table("reason table", "records")
        for key, count in plan.by.items():
            table.add_row(key, str(count))
        out.print(table)
    ends = ", ".join(f"{p}:{end}" for p, end in sorted(plan.read_up_to.items()))
    out.print(f"  read the DLQ up to (partition:end offset) {ends}")
    out.print(f"dry run: nothing was changed. To replay exactly this selection: {command} --execute {plan.plan_id}")


def print_purge(cuts: list[PartitionCut], out: Console, *, executed: bool) -> None:
    table = Table("partition", "log start", "end", "new log start", "deleted", "of them pending", "held")
    for cut in cuts:
        table.add_row(
            *map(str, (cut.partition, cut.log_start, cut.end, cut.delete_before, cut.records, cut.pending)),
            "at a pending record" if cut.held_by_pending else "",
        )
    out.print(table)
    total = sum(c.records for c in cuts)
    out.print(f"{'deleted' if executed else 'would delete'} {total} DLQ record(s)" + ("" if executed else " (dry run)"))
