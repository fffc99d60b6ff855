"""Build the configured warehouse; heavy drivers are imported only for the backend chosen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.common.errors import ConfigError
from services.common.health import Heartbeat
from services.common.settings import Settings
from services.loader.warehouse.base import Warehouse

if TYPE_CHECKING:
    from google.cloud import bigquery

    from services.common.settings import WarehouseSettings

__all__ = ["EMULATOR_PROJECT", "bigquery_client", "open_warehouse"]

EMULATOR_PROJECT = "cdcflow-local"
"""The project named when an emulator endpoint is set and no project is."""


def open_warehouse(settings: Settings, *, heartbeat: Heartbeat | None = None) -> Warehouse:
    """The configured backend; ``heartbeat`` beats after every BigQuery job, so liveness sees a long load move."""
    if settings.warehouse.backend == "duckdb":
        from services.loader.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(settings.duckdb_path())
    from services.loader.warehouse.bigquery import BigQueryWarehouse

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


def bigquery_client(settings: WarehouseSettings) -> bigquery.Client:
    """Google's endpoint with a key file or application default credentials, or an emulator, anonymously."""
    from google.api_core.client_options import ClientOptions
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import bigquery

    project = settings.bigquery_project
    if settings.bigquery_api_endpoint:
        from google.auth.credentials import AnonymousCredentials

        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]  # google-auth leaves __init__ untyped
        return bigquery.Client(
            project=project or EMULATOR_PROJECT,
            credentials=anonymous,
            location=settings.bigquery_location,
            client_options=ClientOptions(api_endpoint=settings.bigquery_api_endpoint),
        )
    try:
        if settings.bigquery_credentials_file:
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                settings.bigquery_credentials_file
            )
            return bigquery.Client(
                project=project or credentials.project_id, credentials=credentials, location=settings.bigquery_location
            )
        return bigquery.Client(project=project, location=settings.bigquery_location)
    except (DefaultCredentialsError, OSError, ValueError) as exc:
        raise ConfigError(f"no usable Google credentials for the bigquery warehouse: {exc}") from None
