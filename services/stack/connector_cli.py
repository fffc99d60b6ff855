"""``cdcflow connector``: status and restart of the Kafka Connect connectors (registered on the ``cdcflow``
app in ``services/cli.py``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from services.stack.connector_state import ConnectorState

__all__ = ["connector_app", "states_table"]

connector_app = typer.Typer(help="Kafka Connect connectors: status of a connector and its tasks, restart.")
console = Console()


def states_table(states: list[ConnectorState]) -> Table:
    """One row per connector and one per task, failures with the first line of their trace."""
    table = Table("connector", "task", "state", "worker", "error")
    for s in states:
        colour = "green" if s.healthy else "red"
        table.add_row(s.name, "", f"[{colour}]{s.state}[/]", s.worker, s.error)
        for t in s.tasks:
            table.add_row("", str(t.task), t.state, t.worker, t.error)
    return table


@connector_app.command("status")
def status(
    name: Annotated[str | None, typer.Argument(help="A connector's name (default: every registered one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The state of a connector and each of its tasks; exit 1 unless all of them run."""
    from services.cli import _settings
    from services.stack.connect import ConnectWorker
    from services.stack.connector_state import connector_states

    states = connector_states(ConnectWorker(_settings()), [name] if name else None)
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in states], indent=2))
    else:
        console.print(states_table(states))
    if not states or not all(s.healthy for s in states):
        raise typer.Exit(1)


@connector_app.command("restart")
def restart(
    name: Annotated[str | None, typer.Argument(help="A connector's name (default: the primary source's).")] = None,
    failed_only: Annotated[
        bool, typer.Option("--failed-only", help="Restart only the connector or tasks that failed.")
    ] = False,
) -> None:
    """Restart a connector and its tasks through Connect's REST API (the worker keeps running)."""
    from services.cli import _settings
    from services.stack.connect import ConnectWorker
    from services.stack.connector_state import restart_connector

    settings = _settings()
    state = restart_connector(ConnectWorker(settings), name or settings.connect.connector, failed_only=failed_only)
    console.print(states_table([state]))
