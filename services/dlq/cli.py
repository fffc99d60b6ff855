"""``cdcflow dlq``: the commands (registered on the ``cdcflow`` app in ``services/cli.py``).

Heavy modules are imported inside the commands, so ``cdcflow --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from services.dlq.app import DlqTool
    from services.dlq.selection import Filters

__all__ = ["dlq_app"]

dlq_app = typer.Typer(
    help="The dead-letter queue _cdcflow.dlq.<group>: count, show, replay after a fix, purge.", no_args_is_help=True
)

FENCED_EXIT = 3

Group = Annotated[
    str | None,
    typer.Option("--group", "-g", help="The consumer group (default CDCFLOW_DLQ__GROUP_ID, else the writer's)."),
]


def _tool(group: str | None) -> DlqTool:
    from services.cli import _settings
    from services.dlq.wiring import open_tool

    return open_tool(_settings(), group)


def _console() -> Console:
    return Console(width=max(Console().width, 132))


def _time_ms(text: str | None, option: str) -> int | None:
    """ISO 8601 (UTC when no offset is given) → epoch milliseconds."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-12-02T09:30", param_hint=option
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dlq_app.command("list")
def dlq_list(
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Groups to count (repeatable; default: every DLQ).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Count DLQ records by group, reason, source table and hour; each original record once, and how many were
    replayed or parked."""
    tool = _tool(group[0] if group else None)
    summary = tool.summary(group or tool.groups())
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from services.dlq.report import print_summary

    print_summary(summary, _console())


@dlq_app.command("show")
def dlq_show(
    ref: Annotated[str, typer.Argument(help="P:O (DLQ partition:offset) or topic:P:O (the original record).")],
    group: Group = None,
) -> None:
    """One record: headers, error, replay progress and the decoded value (inflated when the DLQ compressed it)."""
    typer.echo(json.dumps(_tool(group).show(ref), indent=2, default=str))


def _filters(
    *,
    reason: list[str] | None,
    table: list[str] | None,
    since: str | None,
    until: str | None,
    offsets: str | None,
    limit: int | None,
) -> Filters:
    from services.dlq.selection import Filters, parse_offsets

    try:
        specs = tuple(parse_offsets(offsets)) if offsets else ()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--offsets") from None
    return Filters(
        reasons=tuple(reason or ()),
        tables=tuple(table or ()),
        since_ms=_time_ms(since, "--since"),
        until_ms=_time_ms(until, "--until"),
        offsets=specs,
        limit=limit,
    )


@dlq_app.command("replay")
def dlq_replay(
    *,
    group: Group = None,
    reason: Annotated[list[str] | None, typer.Option("--reason", help="Only this reason (repeatable).")] = None,
    table: Annotated[list[str] | None, typer.Option("--table", help="Only this schema.table (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Dead-lettered at or after (ISO 8601, UTC by default).")] = None,
    until: Annotated[str | None, typer.Option(help="Dead-lettered before (ISO 8601, UTC by default).")] = None,
    offsets: Annotated[
        str | None, typer.Option(help="P:O, P:A-B (DLQ) or topic:P:O (original), comma-separated.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many records (in original order).")] = None,
    to_source: Annotated[
        bool, typer.Option("--to-source", help="Republish to the source topics instead of the writer's replay topic.")
    ] = False,
    max_replays: Annotated[
        int | None, typer.Option(min=1, help="Park a record replayed this many times (CDCFLOW_DLQ__MAX_REPLAYS, 3).")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="Records per second at most (CDCFLOW_DLQ__RATE).")
    ] = None,
    execute: Annotated[
        str | None, typer.Option("--execute", help="Replay the selection the dry run named with this plan id.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan (and outcome) as JSON.")] = False,
) -> None:
    """Plan a replay (dry run: prints the plan and its id, changes nothing); --execute <plan id> replays exactly
    that selection, once, in Kafka transactions (exit 3 when another replay of the group fenced this one)."""
    from services.dlq.errors import ReplayFencedError
    from services.dlq.report import plan_document, print_plan

    tool = _tool(group)
    chosen = _filters(reason=reason, table=table, since=since, until=until, offsets=offsets, limit=limit)
    settings = tool.settings
    replays = max_replays or settings.max_replays
    out = _console()
    if execute is None:
        plan = tool.plan(chosen, to_source=to_source, max_replays=replays)
        if as_json:
            typer.echo(json.dumps(plan_document(plan), indent=2))
        else:
            print_plan(plan, out, "cdcflow dlq " + " ".join(_without_execute(sys.argv[2:])))
        return
    try:
        outcome = tool.execute(
            execute,
            chosen,
            to_source=to_source,
            max_replays=replays,
            rate=rate or settings.rate,
            arguments=sys.argv[1:],
        )
    except ReplayFencedError as exc:
        Console(stderr=True).print(f"[red]fenced:[/] {exc}")
        raise typer.Exit(FENCED_EXIT) from None
    result = {
        **plan_document(outcome.plan),
        "replayed_now": outcome.replayed,
        "parked_now": outcome.parked,
        "target_topic": outcome.target_topic,
        "seconds": round(outcome.seconds, 2),
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    out.print(
        f"plan [bold]{execute}[/] executed: {outcome.replayed} replayed to {outcome.target_topic}, {outcome.parked}"
        f" parked, {result['already_done']} done by an earlier run; {outcome.seconds:.1f}s"
    )


def _without_execute(args: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--execute":
            skip = True
        elif not arg.startswith("--execute="):
            kept.append(arg)
    return kept


@dlq_app.command("purge")
def dlq_purge(
    group: Group = None,
    until: Annotated[str | None, typer.Option(help="Delete records dead-lettered before (ISO 8601).")] = None,
    offsets: Annotated[str | None, typer.Option(help="P:O,…: delete each DLQ partition's records below O.")] = None,
    include_pending: Annotated[
        bool, typer.Option("--include-pending", help="Also delete records not replayed or parked yet.")
    ] = False,
    execute: Annotated[bool, typer.Option("--execute", help="Delete (without it: a dry run).")] = False,
) -> None:
    """Delete DLQ records up to a time or offsets (Kafka DeleteRecords); a dry run unless --execute. Records
    not replayed or parked yet are kept unless --include-pending."""
    from services.dlq.purge import execute_purge, plan_purge
    from services.dlq.report import print_purge

    if (until is None) == (offsets is None):
        raise typer.BadParameter("give one of --until or --offsets", param_hint="--until/--offsets")
    before = None
    if offsets is not None:
        try:
            before = {int(p): int(o) for p, _, o in (item.partition(":") for item in offsets.split(",") if item)}
        except ValueError:
            raise typer.BadParameter(f"{offsets!r} is not P:O,P:O…", param_hint="--offsets") from None
    tool = _tool(group)
    cuts = plan_purge(
        tool, before_ms=_time_ms(until, "--until"), before_offsets=before, include_pending=include_pending
    )
    if execute:
        execute_purge(tool, cuts, sys.argv[1:])
    print_purge(cuts, _console(), executed=execute)
