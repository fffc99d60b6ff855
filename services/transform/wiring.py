"""The transform's wiring: settings → dbt, contracts, warehouse, metrics, health → ``Transformer.run()``."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from prometheus_client import CollectorRegistry

from services import __version__
from services.common.contracts.store import ContractReader
from services.common.health import HealthServer
from services.common.lake import Lake, LakeError, open_lake
from services.common.logging import get_logger
from services.common.metrics import TransformMetrics, new_registry, register_build_info
from services.common.settings import Settings
from services.common.signals import Shutdown
from services.transform.app import LastRun, Transformer, write_last_run
from services.transform.dbt import Dbt
from services.warehouse import Warehouse
from services.warehouse.factory import open_warehouse

__all__ = ["dbt_for", "run_transform", "transformer_for", "work_dir"]


def work_dir(settings: Settings) -> Path:
    """Where the working copy of the dbt project, dbt's target/ and its logs live."""
    return Path(settings.transform.work_dir or settings.stack.state_dir / "transform")


def dbt_for(settings: Settings) -> Dbt:
    """dbt on the transform's working copy, with the profile's variables taken from ``settings``."""
    t, w = settings.transform, settings.warehouse
    target = t.target or w.backend
    base = work_dir(settings)
    env = {
        "CDCFLOW_TRANSFORM__TARGET": target,
        "CDCFLOW_TRANSFORM__THREADS": str(t.threads),
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(settings.duckdb_path().resolve()),
        "CDCFLOW_WAREHOUSE__BIGQUERY_LOCATION": w.bigquery_location,
        "CDCFLOW_TRANSFORM__BIGQUERY_TOKEN": t.bigquery_token.get_secret_value(),
    }
    if w.bigquery_project:
        env["CDCFLOW_WAREHOUSE__BIGQUERY_PROJECT"] = w.bigquery_project
    endpoint = t.bigquery_api_endpoint or w.bigquery_api_endpoint  # by default, where the loader writes bronze
    if endpoint:
        env["CDCFLOW_TRANSFORM__BIGQUERY_API_ENDPOINT"] = endpoint
    return Dbt(
        project_dir=base / "project",
        target=target,
        target_path=base / "target",
        log_path=base / "logs",
        env=env,
    )


def transformer_for(
    settings: Settings,
    shutdown: Shutdown,
    *,
    lake: Lake,
    warehouse: Warehouse,
    registry: CollectorRegistry,
    interval_s: float,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    full_refresh: bool = False,
    silver_every_s: float | None = None,
    changed: Callable[[], Collection[str]] | None = None,
) -> Transformer:
    """The transform on ``lake`` and ``warehouse`` (opened by the caller: its own, or the loader's in its process)."""
    t = settings.transform
    return Transformer(
        dbt=dbt_for(settings),
        source_project=t.project_dir,
        contracts=ContractReader(t.contracts_dir, lake).read,
        ensure_bronze=warehouse.ensure_bronze,
        metrics=TransformMetrics(registry),
        shutdown=shutdown,
        interval_s=interval_s,
        select=list(select) or t.select,
        exclude=list(exclude) or t.exclude,
        full_refresh=full_refresh,
        busy_timeout_s=t.busy_timeout_s,
        record_run=partial(_record_run, lake),
        silver_every_s=t.silver_every_s if silver_every_s is None else silver_every_s,
        changed=changed,
    )


def run_transform(
    settings: Settings,
    shutdown: Shutdown,
    *,
    once: bool,
    every_s: float | None = None,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    full_refresh: bool = False,
    registry: CollectorRegistry | None = None,
) -> int:
    """Run ``dbt build`` once (exit status 1 when a model or test failed) or every ``every_s`` seconds."""
    log = get_logger("services.transform")
    t = settings.transform
    if registry is None:
        registry = new_registry()
        register_build_info(registry, __version__)
    interval = every_s or t.interval_s
    log.info("transform.config", settings=settings.safe_dump(), once=once, interval_s=interval)
    with ExitStack() as stack:
        lake = open_lake(settings.lake, settings.lake_root())
        stack.callback(lake.close)
        warehouse = open_warehouse(settings)
        stack.callback(warehouse.close)
        transformer = transformer_for(
            settings,
            shutdown,
            lake=lake,
            warehouse=warehouse,
            registry=registry,
            interval_s=interval,
            select=select,
            exclude=exclude,
            full_refresh=full_refresh,
        )
        if t.health_port and not once:
            stalled_after = max(900.0, 3 * interval)
            health = HealthServer(
                t.health_host,
                t.health_port,
                registry,
                live=lambda: time.monotonic() - transformer.last_cycle_at < stalled_after,
                ready=lambda: True,
            )
            stack.enter_context(health)
        return transformer.run(once=once)


def _record_run(lake: Lake, run: LastRun) -> None:
    """The run's record for ``cdcflow monitor``; a lake that fails now costs the record, not the run."""
    try:
        write_last_run(lake, run)
    except LakeError as exc:
        get_logger("services.transform").warning("transform.run_not_recorded", error=str(exc))
