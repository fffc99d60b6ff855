"""Build the configured warehouse; heavy drivers are imported only for the backend chosen."""

from __future__ import annotations

from services.common.health import Heartbeat
from services.common.settings import Settings
from services.warehouse.base import Warehouse

__all__ = ["open_warehouse"]


def open_warehouse(settings: Settings, *, heartbeat: Heartbeat | None = None) -> Warehouse:
    """The configured backend; ``heartbeat`` beats after every BigQuery job, so liveness sees a long load move."""
    if settings.warehouse.backend == "duckdb":
        from services.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(settings.duckdb_path(), on_progress=None if heartbeat is None else heartbeat.beat)
    from services.warehouse.bigquery import BigQueryWarehouse, bigquery_client

    warehouse = settings.warehouse
    client = bigquery_client(warehouse)
    return BigQueryWarehouse(
        client,
        project=str(client.project),
        bronze_dataset=warehouse.bigquery_bronze_dataset,
        staging_dataset=warehouse.bigquery_staging_dataset,
        location=warehouse.bigquery_location,
        lake_uri=warehouse.bigquery_lake_uri,
        job_timeout_s=warehouse.bigquery_job_timeout_s,
        retry_deadline_s=warehouse.bigquery_retry_deadline_s,
        on_progress=None if heartbeat is None else heartbeat.beat,
    )
