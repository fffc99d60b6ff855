"""``cdcflow backfill``: incremental snapshots through the connector's signal table, while streaming goes on
(registered on the ``cdcflow`` app in ``services/cli.py``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from services.common.contracts import TableContract
    from services.common.settings import Settings

__all__ = ["Unguarded", "backfill_app"]

backfill_app = typer.Typer(
    help="Backfills: Debezium incremental snapshots of captured tables, without restarting anything.",
    no_args_is_help=True,
)
console = Console()
Source = Annotated[
    str | None, typer.Option("--source", help="Another source's connector name (default: the primary source).")
]
Unguarded = Annotated[
    bool,
    typer.Option(
        "--unguarded",
        help="Send the snapshot although the source lacks a working snapshot window guard (capture.sql): only "
        "where no commit can be in flight while a chunk is read.",
    ),
]


@backfill_app.command("start")
def start(
    tables: Annotated[list[str], typer.Argument(help="schema.table … to snapshot (captured by the connector).")],
    where: Annotated[
        str | None, typer.Option("--where", help='Only the rows matching this SQL condition, e.g. "id > 100".')
    ] = None,
    source: Source = None,
    again: Annotated[bool, typer.Option("--again", help="Run it even when the same request was sent before.")] = False,
    unguarded: Unguarded = False,
) -> None:
    """Snapshot tables' existing rows into their topics while changes keep streaming; the same request sent
    twice runs one snapshot (its id is derived from the tables, their identities and --where)."""
    from services.cli import _settings
    from services.stack.backfill import start_snapshot, target, window_guard_problem

    signal = target(_settings(), source)
    sid, sent = start_snapshot(signal, tables, where, again=again, unguarded=unguarded)
    problem = window_guard_problem(signal) if unguarded else None
    if problem:
        console.print(f"[yellow]warning:[/] sent without the window guard: {problem}")
    if sent:
        console.print(f"[green]requested[/] incremental snapshot {sid} of {', '.join(tables)} ({signal.connector})")
    else:
        console.print(f"already requested: {sid} (see `cdcflow backfill status`; --again runs another one)")


@backfill_app.command("status")
def status(
    source: Source = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every backfill of the connector: requested, running (table, key reached) or done, rows per table, from
    Debezium's notifications."""
    from services.cli import _settings
    from services.stack.backfill import snapshot_status, target

    settings = _settings()
    snapshots = snapshot_status(settings, target(settings, source))
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in snapshots], indent=2))
        return
    table = Table("id", "state", "tables", "reading", "rows read")
    for s in snapshots:
        reading = f"{s.current} key {s.last_key}/{s.max_key}" if s.current else ""
        rows = ", ".join(f"{t} {n:,}" for t, n in s.rows.items())
        table.add_row(s.id, s.state, s.tables, reading, rows)
    console.print(table)


@backfill_app.command("stop")
def stop(
    tables: Annotated[
        list[str] | None, typer.Argument(help="schema.table … to drop from the running snapshot (default: all).")
    ] = None,
    source: Source = None,
) -> None:
    """Stop the running incremental snapshot (or only its given tables); rows already read stay."""
    from services.cli import _settings
    from services.stack.backfill import stop_snapshot, target

    sid = stop_snapshot(target(_settings(), source), tables or [])
    console.print(f"stop requested ({sid})")


@backfill_app.command("deletes")
def deletes(
    tables: Annotated[list[str], typer.Argument(help="schema.table … whose silver rows the source no longer has.")],
    source: Source = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count and show those rows; send nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Send a delete event for every row silver holds and the source no longer has (deleted while no replication
    slot existed): each key is checked again with the table locked in SHARE mode, and its delete carries the
    LSN of that moment."""
    from services.cli import _settings
    from services.transform.deletes import emit_deletes

    settings = _settings()
    results = emit_deletes(settings, _contracts(settings, tables, source), dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in results], indent=2))
        return
    table = Table("table", "topic", "silver rows", "not in the source", "back under the lock", "deletes sent", "LSN")
    for r in results:
        sent = "(dry run)" if dry_run else f"{r.sent:,}"
        counts = (f"{r.silver_rows:,}", f"{r.absent:,}", f"{r.returned:,}")
        table.add_row(r.table, r.topic, *counts, sent, str(r.lsn or ""))
    console.print(table)
    for r in results:
        for key in r.first:
            console.print(f"  {r.table}: ({', '.join(key)})")


def _contracts(settings: Settings, tables: list[str], source: str | None) -> list[TableContract]:
    """The contracts of ``tables`` of the primary source, or of the source whose connector is ``source``."""
    from services.stack.sources import sources
    from services.transform.verify import verify_contracts

    prefix = ""
    if source is not None:
        found = next((s for s in sources(settings) if s.connector == source), None)
        if found is None:
            raise typer.BadParameter(f"no connector file connect/connectors/{source}.json", param_hint="--source")
        prefix = found.source
    wanted = [f"{prefix}/{t}" if prefix else t for t in tables]
    known = {c.full_name: c for c in verify_contracts(settings)}
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise typer.BadParameter(f"no contract for {', '.join(unknown)}", param_hint="TABLES")
    return [known[t] for t in wanted]
