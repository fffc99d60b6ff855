"""The ``cdcflow`` command."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from services import __version__
from services.common.errors import CdcflowError
from services.common.logging import configure_logging
from services.common.settings import Settings, load_settings

if TYPE_CHECKING:
    from services.stack.runtime import ComponentStatus, Stack

__all__ = ["app", "main"]

app = typer.Typer(
    help="cdcflow: streaming change data capture from PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The local runtime: PostgreSQL, Kafka, Kafka Connect + Debezium.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
schemas_app = typer.Typer(help="Table contracts in schemas/: generate from PostgreSQL, check compatibility.")
app.add_typer(schemas_app, name="schemas")

console = Console()


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log, stream=sys.stderr)
    return settings


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def config() -> None:
    """Print the effective configuration with secrets masked."""
    typer.echo(json.dumps(_settings().safe_dump(), indent=2, default=str))


@stack_app.command("up")
def stack_up() -> None:
    """Start PostgreSQL, Kafka and Connect, create the demo schema and register the connector."""
    from services.stack.runtime import Stack

    began = time.monotonic()
    stack = Stack(_settings())
    timings = stack.up()
    steps = ", ".join(f"{name} {secs:.1f}s" for name, secs in timings.items())
    console.print(f"[green]stack up[/] in {time.monotonic() - began:.1f}s ({steps})")
    _print_status(stack)


@stack_app.command("down")
def stack_down(
    purge: Annotated[bool, typer.Option(help="Also delete the state folder (all data).")] = False,
) -> None:
    """Stop every stack process by PID and drop the replication slot."""
    from services.stack.runtime import Stack

    stopped = Stack(_settings()).down(purge=purge)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}" + (" (state purged)" if purge else ""))


@stack_app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each component's health and the connector/task state; exit 1 if any is unhealthy."""
    from services.stack.runtime import Stack

    stack = Stack(_settings())
    components = stack.status()
    if as_json:
        document = {
            "healthy": all(c.healthy for c in components),
            "components": {
                c.name: {"running": c.running, "healthy": c.healthy, "pid": c.pid, **c.detail} for c in components
            },
            "endpoints": stack.endpoints(),
            "logs": stack.log_files(),
        }
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        _print_status(stack, components)
    if not all(c.healthy for c in components):
        raise typer.Exit(1)


@stack_app.command("logs")
def stack_logs(
    component: Annotated[str, typer.Argument(help="postgres, kafka or connect")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=1)] = 50,
) -> None:
    """Print the last lines of a component's log."""
    from services.stack.runtime import Stack

    files = Stack(_settings()).log_files()
    if component not in files:
        raise typer.BadParameter(f"choose one of {', '.join(files)}", param_hint="component")
    path = Path(files[component])
    if not path.exists():
        console.print(f"no log yet at {path}")
        raise typer.Exit(1)
    with path.open(errors="replace") as handle:
        typer.echo("".join(deque(handle, maxlen=lines)), nl=False)


@app.command()
def workload(
    rate: Annotated[float, typer.Option(min=0.1, help="Operations per second.")] = 50.0,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds to run.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Same seed and same data: same operations.")] = 42,
    max_ops: Annotated[int | None, typer.Option(min=1, help="Stop after this many operations.")] = None,
) -> None:
    """Write a reproducible mix of inserts, updates and deletes to the demo lending schema."""
    from services.stack.workload import Workload

    result = Workload(_settings().postgres, seed=seed).run(rate, duration, max_ops)
    table = Table("operation", "count")
    for kind, count in sorted(result.operations.items()):
        table.add_row(kind, str(count))
    console.print(table)
    console.print(f"{result.total} operations in {result.seconds:.1f}s ({result.total / result.seconds:.0f}/s)")


@app.command()
def demo(
    seconds: Annotated[float, typer.Option(min=1, help="How long the workload runs.")] = 30.0,
    rate: Annotated[float, typer.Option(min=0.1, help="Workload operations per second.")] = 200.0,
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 42,
) -> None:
    """Drive the workload on a running stack and show its change events arriving in Kafka."""
    from services.stack.demo import run_demo
    from services.stack.runtime import Stack, require_healthy

    settings = _settings()
    require_healthy(Stack(settings))
    report = run_demo(settings, seconds, rate, seed, console)
    events = sum(report.events.values())
    console.print(
        f"[green]demo done[/]: {report.workload.total} operations written to PostgreSQL, "
        f"{events} change events and {report.tombstones} tombstones read from Kafka in {report.seconds:.1f}s"
    )
    if report.workload.total and not events:
        raise typer.Exit(1)


@app.command()
def consume() -> None:
    """Run the lake writer: captured topics → typed Parquet in the lake, committed once durable."""
    from services.common.signals import Shutdown
    from services.consumer.__main__ import run_writer

    settings = load_settings()
    configure_logging(settings.log)  # services log to stdout
    shutdown = Shutdown()
    shutdown.install()
    raise typer.Exit(run_writer(settings, shutdown))


@app.command()
def load(
    once: Annotated[bool, typer.Option("--once", help="Load what is pending, then exit.")] = False,
    every: Annotated[float | None, typer.Option("--every", min=0.1, help="Seconds between cycles.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="I/N: load only this replica's tables.")] = None,
) -> None:
    """Load new lake files into bronze, idempotently (exit 1 with --once if a table had to stop)."""
    import os

    from services.common.signals import Shutdown
    from services.loader.__main__ import run_loader

    if every is not None:
        os.environ["CDCFLOW_LOADER__INTERVAL_S"] = str(every)
    if shard is not None:
        os.environ["CDCFLOW_LOADER__SHARD"] = shard
    settings = load_settings()
    configure_logging(settings.log)
    shutdown = Shutdown()
    shutdown.install()
    raise typer.Exit(run_loader(settings, shutdown, once=once))


def _contract_scope(settings: Settings) -> tuple[list[str], list[str]]:
    """The tables the connector captures, less the heartbeat table."""
    from services.stack.connect import load_connector

    config = load_connector(settings.stack.connect_dir, settings.connect.connector)
    include = [p.strip() for p in config.get("table.include.list", "").split(",") if p.strip()]
    return include, [r"cdcflow\.heartbeat"]


@schemas_app.command("generate")
def schemas_generate(
    directory: Annotated[Path, typer.Option(help="Where contracts live.")] = Path("schemas"),
) -> None:
    """Write a contract per captured table from the live PostgreSQL catalog (new version on change)."""
    from services.common.contracts import load_contracts, write_contract
    from services.common.contracts.catalog import contracts_from_catalog
    from services.common.contracts.compat import compare, evolve

    settings = _settings()
    current = {c.qualified_name: c for c in load_contracts(directory)}
    include, exclude = _contract_scope(settings)
    for live in contracts_from_catalog(settings.postgres.dsn(), include, exclude):
        old = current.get(live.qualified_name)
        contract = evolve(old, live) if old else live
        changes = compare(old, live) if old else []
        for change in changes:
            console.print(f"  {change}")
        path = write_contract(directory, contract)
        state = "new" if old is None else ("unchanged" if contract.version == old.version else "evolved")
        console.print(f"{contract.qualified_name}: v{contract.version} {state} → {path}")


@schemas_app.command("check")
def schemas_check(
    directory: Annotated[Path, typer.Option(help="Where contracts live.")] = Path("schemas"),
) -> None:
    """Compare the contracts with the live catalog; exit 1 on an incompatible change or a missing contract."""
    from services.common.contracts import load_contracts
    from services.common.contracts.catalog import contracts_from_catalog
    from services.common.contracts.compat import compare

    settings = _settings()
    current = {c.qualified_name: c for c in load_contracts(directory)}
    include, exclude = _contract_scope(settings)
    failed = False
    for live in contracts_from_catalog(settings.postgres.dsn(), include, exclude):
        old = current.get(live.qualified_name)
        if old is None:
            console.print(f"[red]missing[/]: {live.qualified_name} has no contract; run `cdcflow schemas generate`")
            failed = True
            continue
        changes = compare(old, live)
        for change in changes:
            console.print(f"  {change}")
        failed |= any(not c.compatible for c in changes)
        console.print(f"{live.qualified_name}: {'compatible' if all(c.compatible for c in changes) else 'BREAKING'}")
    if failed:
        raise typer.Exit(1)


def _print_status(stack: Stack, components: list[ComponentStatus] | None = None) -> None:
    rows = components if components is not None else stack.status()
    table = Table("component", "state", "pid")
    for row in rows:
        state = "[green]healthy[/]" if row.healthy else ("[yellow]running[/]" if row.running else "[red]down[/]")
        table.add_row(row.name, state, str(row.pid or ""))
    console.print(table)
    for name, value in stack.endpoints().items():
        console.print(f"  {name}: {value}")


def main() -> None:
    try:
        app()
    except CdcflowError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        sys.exit(2)
