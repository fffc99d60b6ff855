"""``cdcflow schemas``: table contracts in schemas/, from the live PostgreSQL catalog (registered on the
``cdcflow`` app in ``services/cli.py``).

Heavy modules are imported inside the commands, so ``cdcflow --help`` stays fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from services.common.contracts import TableContract
    from services.common.settings import Settings

__all__ = ["schemas_app"]

schemas_app = typer.Typer(help="Table contracts in schemas/: generate from PostgreSQL, check compatibility.")
console = Console()


@schemas_app.command("silver")
def schemas_silver(
    check: Annotated[bool, typer.Option("--check", help="Change nothing; exit 1 when the files are stale.")] = False,
) -> None:
    """Write dbt's bronze sources and silver models (dbt/models) from the contracts in schemas/."""
    from services.cli import _settings, print_sync
    from services.common.contracts import load_contracts
    from services.transform.silver import sync

    settings = _settings()
    t = settings.transform
    report = sync(t.project_dir, load_contracts(t.contracts_dir), check=check)
    print_sync(report, check=check, what="the silver models", fix="schemas silver")


ContractsDir = Annotated[
    Path | None, typer.Option(help="Where contracts live (default CDCFLOW_WRITER__CONTRACTS_DIR).")
]
SourceName = Annotated[
    str | None,
    typer.Option("--source", help="Another source's connector name (default: the primary source, lending)."),
]


@schemas_app.command("generate")
def schemas_generate(
    directory: ContractsDir = None,
    source: SourceName = None,
) -> None:
    """Write a contract per captured table from the live PostgreSQL catalog (a new version on an added column)."""
    from services.cli import _settings
    from services.common.contracts import load_contracts, write_contract
    from services.common.contracts.compat import compare, evolve

    settings = _settings()
    folder = directory or settings.writer.contracts_dir
    found = _catalog_contracts(settings, source)
    current = {c.qualified_name: c for c in load_contracts(folder) if c.source == _source_of(found)}
    for live in found:
        old = current.get(live.qualified_name)
        contract = evolve(old, live) if old else live
        for change in compare(old, live) if old else []:
            console.print(f"  {change}")
        path = write_contract(folder, contract)
        state = "new" if old is None else ("unchanged" if contract.version == old.version else "evolved")
        console.print(f"{contract.qualified_name}: v{contract.version} {state} → {path}")
    _derive_produced(folder, _source_of(found))


def _derive_produced(folder: Path, source: str) -> None:
    """The enricher's output contract follows its inputs' (services/enricher/contract.py)."""
    from services.common.contracts import load_contracts, write_contract
    from services.enricher.contract import derive

    produced = derive(load_contracts(folder)) if not source else None
    if produced is not None:
        path = write_contract(folder, produced)
        console.print(f"{produced.qualified_name}: v{produced.version} derived → {path}")


@schemas_app.command("check")
def schemas_check(
    directory: ContractsDir = None,
    source: SourceName = None,
) -> None:
    """Compare the contracts with the live catalog; exit 1 on an incompatible change or a missing contract."""
    from services.cli import _settings
    from services.common.contracts import load_contracts
    from services.common.contracts.compat import compare

    settings = _settings()
    found = _catalog_contracts(settings, source)
    folder = directory or settings.writer.contracts_dir
    current = {c.qualified_name: c for c in load_contracts(folder) if c.source == _source_of(found)}
    failed = False
    for live in found:
        old = current.get(live.qualified_name)
        if old is None:
            console.print(f"[red]missing[/]: {live.qualified_name} has no contract; run `cdcflow schemas generate`")
            failed = True
            continue
        changes = compare(old, live)
        for change in changes:
            console.print(f"  {change}")
        compatible = all(c.compatible for c in changes)
        failed |= not compatible
        console.print(f"{live.qualified_name}: {'compatible' if compatible else '[red]INCOMPATIBLE[/]'}")
    if failed:
        raise typer.Exit(1)


def _catalog_contracts(settings: Settings, source: str | None = None) -> list[TableContract]:
    """Contracts, from the live catalog, of the tables a connector captures (less the excluded ones): the
    primary source's, or with ``source`` another connector file's, read from its database."""
    from dataclasses import replace

    from services.common.contracts.catalog import contracts_from_catalog
    from services.common.contracts.reserved import warehouse_limits
    from services.stack.connect import load_connector
    from services.stack.sources import sources

    w = settings.writer
    exclude = [re.escape(t) for t in w.exclude_tables]
    if source is None:
        config, dsn, stamp = load_connector(settings.stack.connect_dir, settings.connect.connector), None, ""
    else:
        other = next((s for s in sources(settings) if s.connector == source), None)
        if other is None:
            raise typer.BadParameter(f"no connector file connect/connectors/{source}.json", param_hint="--source")
        config, dsn, stamp = other.config, other.dsn(), other.source
    include = [p.strip() for p in config.get("table.include.list", "").split(",") if p.strip()]
    found = contracts_from_catalog(
        dsn or settings.postgres.dsn(),
        include,
        exclude,
        exclude_columns=w.exclude_columns,
        warehouse=warehouse_limits(settings.warehouse.backend),
    )
    return [replace(c, source=stamp) for c in found]


def _source_of(contracts: list[TableContract]) -> str:
    return contracts[0].source if contracts else ""
