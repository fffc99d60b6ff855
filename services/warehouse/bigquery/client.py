"""A BigQuery client for Google's endpoint or a local emulator."""

from __future__ import annotations

from google.cloud import bigquery

from services.common.errors import ConfigError
from services.common.settings import WarehouseSettings

__all__ = ["EMULATOR_PROJECT", "bigquery_client"]

EMULATOR_PROJECT = "cdcflow-local"
"""The project named when an emulator endpoint is set and no project is."""


def bigquery_client(settings: WarehouseSettings) -> bigquery.Client:
    """Google's endpoint with a key file or application default credentials, or an emulator, anonymously."""
    from google.api_core.client_options import ClientOptions
    from google.auth.exceptions import DefaultCredentialsError

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
