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
from services.common.errors import exit_on_error
from services.common.logging import configure_logging
from services.common.settings import Settings, load_settings
from services.dlq.cli import dlq_app
from services.stack.backfill_cli import backfill_app
from services.stack.connector_cli import connector_app
from services.stack.schemas_cli import schemas_app
from services.stack.source_cli import source_app

if TYPE_CHECKING:
    from services.common.generated import SyncReport
    from services.stack.runtime import ComponentStatus, Stack

__all__ = ["app", "main"]

app = typer.Typer(
    help="cdcflow: streaming change data capture from PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The local runtime: PostgreSQL, Kafka, Kafka Connect + Debezium.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")
app.add_typer(dlq_app, name="dlq")
app.add_typer(source_app, name="source")
app.add_typer(connector_app, name="connector")
app.add_typer(backfill_app, name="backfill")
deploy_app = typer.Typer(help="Deployment: Kubernetes manifests from the project's files, connector registration.")
app.add_typer(deploy_app, name="deploy")

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
def consume() -> None:
    """Run the lake writer (Kafka → Parquet lake) until SIGTERM/SIGINT; settings from CDCFLOW_* variables."""
    from services.consumer.__main__ import main as run

    run()


@app.command()
def monitor() -> None:
    """Export lag, replication slots, connectors, bronze freshness, transform runs and the DLQ as Prometheus
    metrics, seen from outside the workers, until SIGTERM/SIGINT (CDCFLOW_MONITOR__HEALTH_PORT, 9104)."""
    from services.common.signals import Shutdown
    from services.monitor.wiring import run_monitor

    settings = _settings()
    shutdown = Shutdown()
    shutdown.install()
    raise typer.Exit(run_monitor(settings, shutdown))


@app.command()
def enrich() -> None:
    """Join transactions with their customer and facility as of each change's LSN, exactly once, into
    <prefix>.enriched.transactions, until SIGTERM/SIGINT (CDCFLOW_ENRICHER__*; health port 9467)."""
    from services.common.signals import Shutdown
    from services.enricher.wiring import run_enricher

    settings = _settings()
    shutdown = Shutdown()
    shutdown.install()
    raise typer.Exit(run_enricher(settings, shutdown))


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
    transform_every: Annotated[float, typer.Option(min=1, help="Seconds between transform runs.")] = 30.0,
) -> None:
    """The whole pipeline on a running stack, live; then drain, transform, verify and the gold marts.

    Exit 1 when the pipeline does not drain, the transform fails or silver differs from the source; an
    interrupted demo (Ctrl-C) stops everything cleanly and exits 0.
    """
    from services.common.signals import Shutdown
    from services.stack.demo import run_demo
    from services.stack.runtime import Stack, require_healthy

    settings = _settings()
    require_healthy(Stack(settings))
    stop = Shutdown()
    stop.install()
    out = _wide_console()
    report = run_demo(settings, out, stop, seconds=seconds, rate=rate, seed=seed, transform_every_s=transform_every)
    events = sum(t.get("events", 0) for t in report.tables.values())
    bronze = sum(t.get("bronze rows", 0) for t in report.tables.values())
    summary = (
        f"{report.workload.total} operations written to PostgreSQL; {events:,.0f} change events consumed; "
        f"{bronze:,.0f} rows loaded into bronze ({settings.duckdb_path()}); {report.seconds:.1f}s"
    )
    if report.interrupted:
        out.print(f"[yellow]demo interrupted[/]: everything stopped cleanly. {summary}")
        return
    if report.failure:
        out.print(f"[red]demo failed[/]: {report.failure}. {summary}")
        raise typer.Exit(1)
    tables = len(report.verify.tables) if report.verify else 0
    out.print(f"[green]demo done[/]: zero drift on {tables} table(s). {summary}")


@app.command()
def transform(
    once: Annotated[bool, typer.Option("--once", help="One run, then exit (1 when a model or test failed).")] = False,
    every: Annotated[
        float | None,
        typer.Option("--every", min=1, help="Seconds between runs (default CDCFLOW_TRANSFORM__INTERVAL_S)."),
    ] = None,
    select: Annotated[
        list[str] | None, typer.Option("--select", "-s", help="dbt selection, e.g. 'silver' or '+fct_payments'.")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="dbt nodes to leave out.")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Rebuild incremental models.")] = False,
) -> None:
    """Build silver and gold with `dbt build`: once, or on a schedule (a failed run is logged, the next one runs)."""
    from services.common.signals import Shutdown
    from services.transform.wiring import run_transform

    if once and every is not None:
        raise typer.BadParameter("choose --once or --every", param_hint="--once/--every")
    settings = _settings()
    shutdown = Shutdown()
    shutdown.install()
    selection = [part for item in select or [] for part in item.split()]
    excluded = [part for item in exclude or [] for part in item.split()]
    code = run_transform(
        settings, shutdown, once=once, every_s=every, select=selection, exclude=excluded, full_refresh=full_refresh
    )
    raise typer.Exit(code)


@app.command()
def load(
    once: Annotated[bool, typer.Option("--once", help="Load what is pending, then exit.")] = False,
    every: Annotated[
        float | None, typer.Option("--every", min=0.1, help="Seconds between cycles (CDCFLOW_LOADER__INTERVAL_S).")
    ] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="I/N: load only this replica's share of tables.")] = None,
    with_transform: Annotated[
        bool,
        typer.Option(
            "--with-transform",
            help="Run the transform in this process too: silver steps after loads, a full dbt build every "
            "CDCFLOW_TRANSFORM__INTERVAL_S (DuckDB: one process owns the file).",
        ),
    ] = False,
) -> None:
    """Load new lake files into bronze, idempotently: once, or a cycle every few seconds until SIGTERM."""
    from pydantic import ValidationError

    from services.common.settings import LoaderSettings
    from services.common.signals import Shutdown
    from services.loader.wiring import run_loader

    if once and every is not None:
        raise typer.BadParameter("choose --once or --every", param_hint="--once/--every")
    settings = _settings()
    chosen: dict[str, object] = {k: v for k, v in (("interval_s", every), ("shard", shard)) if v is not None}
    if with_transform:
        chosen["with_transform"] = True
    try:
        loader = LoaderSettings.model_validate({**settings.loader.model_dump(), **chosen})
    except ValidationError as exc:
        raise typer.BadParameter(exc.errors()[0]["msg"], param_hint="--shard") from None
    settings = settings.model_copy(update={"loader": loader})
    shutdown = Shutdown()
    shutdown.install()
    raise typer.Exit(run_loader(settings, shutdown, once=once))


@app.command()
def verify(
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            "-t",
            help="schema.table (another source's: prefix/schema.table) to compare (repeatable); default: all.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="Differing keys to show per table.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output; the same exit code.")] = False,
) -> None:
    """Compare every captured PostgreSQL table with its silver table, row for row; exit 1 on any drift."""
    from services.transform.verify import print_report, verify_contracts, verify_warehouse

    settings = _settings()
    contracts = verify_contracts(settings)
    if table:
        unknown = sorted(set(table) - {c.full_name for c in contracts})
        if unknown:
            raise typer.BadParameter(f"no contract for {', '.join(unknown)}", param_hint="--table")
        contracts = [c for c in contracts if c.full_name in table]
    report = verify_warehouse(settings, contracts, limit=limit, every_captured=not table)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report, _wide_console())
    if report.drift:
        raise typer.Exit(1)


def _wide_console() -> Console:
    """Table names stay whole in logs and CI output."""
    return Console(width=max(console.width, 132))


@deploy_app.command("generate")
def deploy_generate(
    check: Annotated[bool, typer.Option("--check", help="Change nothing; exit 1 when the files are stale.")] = False,
) -> None:
    """Write deploy/k8s/base/generated/: Strimzi KafkaConnectors from connect/connectors/*.json, the PrometheusRule."""
    from services.common.settings import repo_root
    from services.deploy.manifests import sync

    print_sync(sync(repo_root(), check=check), check=check, what="the generated manifests", fix="deploy generate")


@deploy_app.command("register")
def deploy_register(
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for Connect and for each connector.")] = 300.0,
) -> None:
    """Register connect/connectors/*.json with the Connect worker at CDCFLOW_CONNECT__URL; wait until they run."""
    from services.deploy.register import register_all

    names = register_all(_settings(), timeout)
    console.print(f"running: {', '.join(names)}")


def print_sync(report: SyncReport, *, check: bool, what: str, fix: str) -> None:
    """Each generated file written or removed (with ``check``: stale); exit 1 when ``check`` found any."""
    for name in report.written:
        console.print(f"{'stale' if check else 'wrote'}: {name}")
    for name in report.removed:
        console.print(f"{'stale' if check else 'removed'}: {name}")
    console.print(f"{report.unchanged} file(s) up to date")
    if check and report.changed:
        console.print(f"[red]{what} are stale[/]: run `cdcflow {fix}`")
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
    exit_on_error(app)


if __name__ == "__main__":
    main()
