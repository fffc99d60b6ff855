"""The loader's wiring: settings → lake, warehouse, lease, metrics, health → ``Loader.run()``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack

from prometheus_client import CollectorRegistry

from services import __version__
from services.common.health import HealthServer, Heartbeat
from services.common.lake import open_lake
from services.common.logging import get_logger
from services.common.metrics import LoaderMetrics, new_registry, register_build_info
from services.common.settings import BIGQUERY_LOAD_JOBS_PER_TABLE_PER_DAY, Settings
from services.common.signals import Shutdown
from services.loader.app import Loader
from services.loader.lease import ShardLease
from services.stack.sources import topic_prefixes
from services.transform.app import Transformer
from services.transform.changes import ChangedTables
from services.transform.wiring import transformer_for
from services.warehouse.factory import open_warehouse

__all__ = ["run_loader", "stalled_after_s"]


def run_loader(
    settings: Settings,
    shutdown: Shutdown,
    *,
    once: bool,
    registry: CollectorRegistry | None = None,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Run the loader (one cycle with ``once``); ``registry`` lets an embedding process read its metrics, and
    ``before_commit`` runs between staging a batch and committing it (a test's crash)."""
    log = get_logger("services.loader")
    loader_settings = settings.loader
    if registry is None:
        registry = new_registry()
        register_build_info(registry, __version__)
    log.info("loader.config", settings=settings.safe_dump(), once=once)
    shortest = 86_400 / BIGQUERY_LOAD_JOBS_PER_TABLE_PER_DAY
    if settings.warehouse.backend == "bigquery" and loader_settings.min_table_interval_s < shortest:
        log.warning(
            "loader.load_quota_at_risk",
            min_table_interval_s=loader_settings.min_table_interval_s,
            why=f"BigQuery allows {BIGQUERY_LOAD_JOBS_PER_TABLE_PER_DAY:,} load jobs per table a day; "
            f"CDCFLOW_LOADER__MIN_TABLE_INTERVAL_S below {shortest:.1f} can exhaust them",
        )
    with ExitStack() as stack:
        lake = open_lake(settings.lake, settings.lake_root())
        stack.callback(lake.close)
        heartbeat = Heartbeat()
        warehouse = open_warehouse(settings, heartbeat=heartbeat)
        stack.callback(warehouse.close)
        prefixes = topic_prefixes(settings)  # every source's, from connect/connectors/
        changes = ChangedTables() if loader_settings.with_transform else None
        loader = Loader(
            loader_settings,
            topic_prefix=prefixes[0],
            other_prefixes=prefixes[1:],
            lake=lake,
            warehouse=warehouse,
            metrics=LoaderMetrics(registry),
            shutdown=shutdown,
            heartbeat=heartbeat,
            lease=ShardLease(lake, loader_settings.shard_of(), ttl_s=stalled_after_s(settings)),
            before_commit=before_commit,
            on_loaded=changes.add if changes is not None else None,
        )
        stack.callback(loader.release_lease)
        if loader_settings.health_port and not once:
            health = HealthServer(
                loader_settings.health_host,
                loader_settings.health_port,
                registry,
                live=heartbeat.alive_within(stalled_after_s(settings)),
                ready=lambda: True,
            )
            stack.enter_context(health)
        if changes is not None:
            # for the process's life, so the loader's and dbt's connections always find the database instance
            # DuckDB keeps per file: it closes with the last connection, and a connection opened while it
            # closes opens the file a second time, which DuckDB refuses (nothing to keep open on BigQuery)
            stack.enter_context(warehouse.session())
            transformer = transformer_for(
                settings,
                shutdown,
                lake=lake,
                warehouse=warehouse,
                registry=registry,
                interval_s=settings.transform.interval_s,
                silver_every_s=settings.transform.silver_every_s or loader_settings.interval_s,
                changed=changes.take,
            )
            if once:
                code = loader.run(once=True)
                return max(code, transformer.run(once=True))
            beside = _TransformThread(transformer, shutdown)
            beside.start()
            stack.callback(beside.join)  # before the warehouse and the lake close
            try:
                code = loader.run(once=False)
            finally:  # the loader ended, on a signal or an error: the transform ends too, or the join waits for ever
                shutdown.request("the loader stopped")
            return max(code, beside.join())
        return loader.run(once=once)


class _TransformThread(threading.Thread):
    """The transform beside the loader, in its process: DuckDB shares one database instance between the
    connections of a process, so a load and a dbt invocation run at once instead of taking turns at the
    file's lock. A transform that crashes stops the process (exit 1), so it is restarted, not left dead."""

    def __init__(self, transformer: Transformer, shutdown: Shutdown) -> None:
        super().__init__(name="transform", daemon=True)
        self._transformer = transformer
        self._shutdown = shutdown
        self.code = 0

    def run(self) -> None:
        try:
            self.code = self._transformer.run(once=False)
        except Exception:
            get_logger("services.transform").exception("transform.crashed")
            self.code = 1
            self._shutdown.request("the transform beside the loader crashed")

    def join(self, timeout: float | None = None) -> int:  # type: ignore[override]
        """Wait for the thread; its exit status."""
        if self.is_alive():
            super().join(timeout)
        return self.code


def stalled_after_s(settings: Settings) -> float:
    """How long the loader may go without beginning or ending a step before liveness fails.

    The slowest single step is one warehouse job with its retries (BigQuery) plus one lake call with its
    retries (GCS), with a minute of margin; never less than three cycle intervals.
    """
    step = 60.0
    if settings.warehouse.backend == "bigquery":
        step += settings.warehouse.bigquery_job_timeout_s + settings.warehouse.bigquery_retry_deadline_s
    if settings.lake.backend == "gcs":
        step += settings.lake.gcs_retry_deadline_s
    return max(step, 3 * settings.loader.interval_s)
