"""``cdcflow source``: capture another PostgreSQL database (registered on the ``cdcflow`` app in ``services/cli.py``).

Heavy modules are imported inside the commands, so ``cdcflow --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from services.stack.backfill_cli import Unguarded

__all__ = ["source_app"]

source_app = typer.Typer(
    help="Sources: one PostgreSQL database each, captured by one connector file in connect/connectors/.",
    no_args_is_help=True,
)
console = Console()


@source_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The source's name, also its topic prefix (e.g. shop).")],
    dsn: Annotated[str, typer.Option("--dsn", help="postgresql://user[:password]@host:port/database")],
    tables: Annotated[
        str, typer.Option("--tables", help="schema.table,… to capture (default: every table of the database).")
    ] = "",
    register: Annotated[bool, typer.Option(help="Register the connector when Kafka Connect runs.")] = True,
) -> None:
    """Write connect/connectors/<name>.json for a database and, when the stack runs, register it."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from services.cli import _settings
    from services.stack.connect import ConnectWorker
    from services.stack.errors import StackError
    from services.stack.sources import (
        capture_blockers,
        ensure_capture_objects,
        new_connector,
        own_rows_overrides,
        write_connector,
    )

    settings = _settings()
    document = new_connector(settings, name, dsn, [t.strip() for t in tables.split(",") if t.strip()])
    config = document["config"]
    if "password" not in conninfo_to_dict(dsn) and config["database.password"].startswith("${env:CDCFLOW_POSTGRES"):
        dsn = make_conninfo(dsn, password=settings.postgres.password.get_secret_value())  # the stack's own user
    if problems := capture_blockers(dsn, config):
        raise StackError(
            "; ".join(problems) + ". Nothing was written: fix them, or name the tables to capture with --tables"
        )
    config.update(own_rows_overrides(dsn, config))
    ensure_capture_objects(dsn)
    path = write_connector(settings, document)
    console.print(f"[green]wrote[/] {path}")
    if "${env:CDCFLOW_SOURCE_" in config["database.password"]:
        console.print(f"the Connect worker reads the password from {config['database.password'][6:-1]}")
    worker = ConnectWorker(settings)
    if register and worker.healthy():
        worker.register(name)
        worker.wait_running(name, settings.stack.start_timeout_s)
        console.print(f"[green]registered[/] connector {name}: topics {name}.<schema>.<table>")
    else:
        console.print("not registered: `cdcflow stack up` registers every connector file")
    primary = settings.kafka.primary_prefix or settings.kafka.topic_prefix
    console.print(
        "its lake writer: CDCFLOW_KAFKA__TOPIC_PREFIX={0} CDCFLOW_KAFKA__PRIMARY_PREFIX={1} "
        "CDCFLOW_WRITER__GROUP_ID=cdcflow-lake-writer-{0} CDCFLOW_POSTGRES__DATABASE={2} cdcflow consume".format(
            name, primary, config["database.dbname"]
        )
    )


@source_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The source's connector name.")]) -> None:
    """Unregister a source, drop its replication slot and publication, delete its connector file (its topics,
    lake files and tables stay)."""
    from services.cli import _settings
    from services.stack.sources import remove_source

    for step in remove_source(_settings(), name):
        console.print(step)


@source_app.command("add-table")
def add_table(
    table: Annotated[str, typer.Argument(help="schema.table to capture from now on.")],
    source: Annotated[
        str | None, typer.Option("--source", help="The source's connector name (default: the primary source).")
    ] = None,
    unguarded: Unguarded = False,
) -> None:
    """Capture one more table without restarting Connect: include list, publication, connector config (its task
    restarts), then an incremental snapshot of its existing rows (`cdcflow backfill status` follows it)."""
    from services.cli import _settings
    from services.stack.backfill import add_table as capture

    for step in capture(_settings(), table, source, unguarded=unguarded):
        console.print(step)
