"""Bronze in BigQuery: load jobs from the lake's ``gs://`` URIs into staging, then one transaction."""

from services.warehouse.bigquery.client import EMULATOR_PROJECT, bigquery_client
from services.warehouse.bigquery.errors import corrupt_file, error_kind
from services.warehouse.bigquery.sql import MAX_URIS_PER_JOB, PARTITION_COLUMN, chunked, file_slot, load_job_id
from services.warehouse.bigquery.types import HIVE_KEYS, bigquery_field, bigquery_schema, staging_schema
from services.warehouse.bigquery.warehouse import BigQueryWarehouse

__all__ = [
    "EMULATOR_PROJECT",
    "HIVE_KEYS",
    "MAX_URIS_PER_JOB",
    "PARTITION_COLUMN",
    "BigQueryWarehouse",
    "bigquery_client",
    "bigquery_field",
    "bigquery_schema",
    "chunked",
    "corrupt_file",
    "error_kind",
    "file_slot",
    "load_job_id",
    "staging_schema",
]
