"""The BigQuery backend's pure logic: types from contracts, job ids, URI chunks, error kinds, settings."""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any

import pytest
import requests
from google.api_core import exceptions as api
from google.auth import exceptions as auth

from services.common.contracts import Column
from services.common.errors import ConfigError
from services.common.lake import LakeFile
from services.common.settings import load_settings
from services.warehouse.bigquery import (
    HIVE_KEYS,
    MAX_URIS_PER_JOB,
    bigquery_schema,
    chunked,
    corrupt_file,
    error_kind,
    file_slot,
    load_job_id,
    staging_schema,
)
from services.warehouse.bronze import LoadBatch
from services.warehouse.errors import WarehouseBusyError, WarehouseError
from tests.fixtures.lakefiles import lending_contract


def _google(kind: Any, *args: Any, **kwargs: Any) -> BaseException:
    """A Google client exception (their constructors are untyped)."""
    error: BaseException = kind(*args, **kwargs)
    return error


def _types(table: str) -> dict[str, tuple[str, str, int | None, int | None]]:
    return {f.name: (f.field_type, f.mode, f.precision, f.scale) for f in bigquery_schema(lending_contract(table))}


def test_schema_from_the_contract_keeps_decimals_exact() -> None:
    transactions = _types("transactions")
    assert transactions["amount"] == ("NUMERIC", "NULLABLE", 20, 2)
    assert transactions["exchange_rate"] == ("BIGNUMERIC", "NULLABLE", None, None)  # unconstrained NUMERIC
    assert transactions["transaction_id"] == ("INT64", "NULLABLE", None, None)  # every bronze column is nullable
    assert transactions["booked_at"][0] == "TIMESTAMP"
    assert transactions["value_date"][0] == "DATE"
    assert transactions["_unavailable_columns"] == ("STRING", "REPEATED", None, None)
    assert transactions["_kafka_partition"][0] == "INT64"
    assert list(transactions)[-3:] == ["_loaded_at", "_load_id", "_lake_file"]
    customers = _types("customers")
    assert {t for t, *_ in customers.values()} <= {
        "INT64",
        "STRING",
        "NUMERIC",
        "BIGNUMERIC",
        "TIMESTAMP",
        "DATE",
        "DATETIME",
        "BOOL",
        "BYTES",
        "FLOAT64",
        "TIME",
    }


def test_decimal_widths_choose_numeric_or_bignumeric() -> None:
    contract = lending_contract("transactions")

    def mapped(precision: int, scale: int) -> tuple[str, int | None, int | None]:
        column = Column("x", "decimal", "numeric", precision=precision, scale=scale)
        field = bigquery_schema(dataclasses.replace(contract, columns=(column,), primary_key=()))[0]
        return field.field_type, field.precision, field.scale

    assert mapped(38, 9) == ("NUMERIC", 38, 9)
    assert mapped(12, 10) == ("BIGNUMERIC", 12, 10)  # scale above NUMERIC's 9
    assert mapped(35, 2) == ("BIGNUMERIC", 35, 2)  # 33 integer digits: above NUMERIC's 29
    assert mapped(76, 38) == ("BIGNUMERIC", None, None)  # the widest: plain BIGNUMERIC
    with pytest.raises(WarehouseError, match="more digits before the point than BigQuery's widest exact decimal"):
        mapped(60, 2)  # 58 integer digits
    with pytest.raises(WarehouseError, match="more digits after the point than BigQuery's widest exact decimal"):
        mapped(50, 40)


def test_staging_is_the_lake_file_then_its_folder_keys() -> None:
    contract = lending_contract("transactions")
    names = [f.name for f in staging_schema(contract)]
    assert names[-2:] == [k for k, _ in HIVE_KEYS] == ["dt", "hour"]
    assert "_lake_file" not in names
    assert "_load_id" not in names


def test_job_ids_are_deterministic_and_valid() -> None:
    first = load_job_id("lending__transactions", "abc123", 1_795_000_000_000, 0)
    assert first == load_job_id("lending__transactions", "abc123", 1_795_000_000_000, 0)
    assert first == "cdcflow_load_lending__transactions_abc123_1795000000000_0"
    assert load_job_id("lending__transactions", "abc123", 1_795_000_000_001, 0) != first  # a new staging table
    assert load_job_id("lending__transactions", "abc123", 1_795_000_000_000, 1) != first  # the next chunk
    long = load_job_id("x" * 2000 + ".y", "abc", 1, 0)
    assert len(long) <= 1024
    assert long == load_job_id("x" * 2000 + ".y", "abc", 1, 0)
    assert set(long) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def test_batch_ids_follow_files_and_versions() -> None:
    contract = lending_contract("transactions")
    a = LakeFile("cdcflow/lending.transactions/dt=2026-11-22/hour=10/p0-00000000000000000000.parquet", 10, "1")
    b = dataclasses.replace(a, version="2")
    assert LoadBatch(contract, (a,)).load_id == LoadBatch(contract, (a,)).load_id
    assert LoadBatch(contract, (a,)).load_id != LoadBatch(contract, (b,)).load_id


def test_uris_are_cut_at_ten_thousand_per_job() -> None:
    uris = [f"gs://b/f{i}.parquet" for i in range(25_001)]
    chunks = chunked(uris)
    assert MAX_URIS_PER_JOB == 10_000
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_001]
    assert [u for c in chunks for u in c] == uris
    assert chunked([]) == []
    assert [len(c) for c in chunked(uris[:10_000])] == [10_000]


def test_file_slots_come_from_the_writers_names() -> None:
    slot = file_slot(
        "cdcflow/lending.transactions/dt=2026-11-22/hour=07/p3-00000000000000000042-00000000000000000050.parquet"
    )
    assert (slot.table_folder, slot.dt.isoformat(), slot.hour, slot.partition, slot.first_offset) == (
        "cdcflow/lending.transactions",
        "2026-11-22",
        7,
        3,
        42,
    )
    assert slot.last_offset == 50
    with pytest.raises(WarehouseError, match="not a lake file path"):
        file_slot("cdcflow/lending.transactions/whatever.parquet")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (_google(api.TooManyRequests, "slow down"), WarehouseBusyError),
        (_google(api.InternalServerError, "oops"), WarehouseBusyError),
        (_google(api.ServiceUnavailable, "later"), WarehouseBusyError),
        (_google(api.RetryError, "deadline", cause=None), WarehouseBusyError),
        (_google(api.Forbidden, "quota", errors=[{"reason": "quotaExceeded"}]), WarehouseBusyError),
        (_google(api.Forbidden, "rate", errors=[{"reason": "rateLimitExceeded"}]), WarehouseBusyError),
        (_google(api.BadRequest, "Transaction is aborted due to concurrent update against table"), WarehouseBusyError),
        (_google(api.Forbidden, "Access Denied", errors=[{"reason": "accessDenied"}]), WarehouseError),
        (_google(api.BadRequest, "Syntax error", errors=[{"reason": "invalidQuery"}]), WarehouseError),
        (_google(api.NotFound, "Not found: Dataset p:bronze"), WarehouseError),
        (_google(api.Conflict, "Already Exists: Job"), WarehouseError),
        (requests.ConnectionError("refused"), WarehouseBusyError),
        (concurrent.futures.TimeoutError(), WarehouseBusyError),
        (_google(auth.TransportError, "dns"), WarehouseBusyError),
        (_google(auth.RefreshError, "invalid_grant"), WarehouseError),
        (ValueError("not ours"), None),
    ],
)
def test_google_errors_are_terminal_or_transient(exc: BaseException, kind: type[Exception] | None) -> None:
    assert error_kind(exc) is kind


_URI = "gs://lake/cdcflow/lending.transactions/2026-11-22/07/p3-42.parquet"
_PATHS = {_URI: "cdcflow/lending.transactions/2026-11-22/07/p3-42.parquet"}


@dataclasses.dataclass
class _FailedJob:
    errors: list[dict[str, str]]


@pytest.mark.parametrize(
    ("exc", "job_errors", "set_aside"),
    [
        # what BigQuery says of a file it cannot read as Parquet of the table
        (
            _google(api.BadRequest, "Error while reading data", errors=[{"reason": "invalid", "message": "bad"}]),
            [{"reason": "invalid", "location": _URI, "message": "Error while reading data, error message: bad"}],
            True,
        ),
        (
            _google(api.BadRequest, f"Error while reading data, error message: not Parquet. File: {_URI}"),
            [{"reason": "invalid", "message": f"Error while reading data. File: {_URI}"}],
            True,
        ),
        # errors that name the file but say nothing of its content
        (
            _google(api.Forbidden, f"Access Denied: File {_URI}", errors=[{"reason": "accessDenied"}]),
            [{"reason": "accessDenied", "location": _URI, "message": f"Access Denied: File {_URI}"}],
            False,
        ),
        (
            _google(api.NotFound, f"Not found: URI {_URI}", errors=[{"reason": "notFound"}]),
            [{"reason": "notFound", "message": f"Not found: URI {_URI}"}],
            False,
        ),
        (
            _google(api.InternalServerError, f"backendError {_URI}", errors=[{"reason": "backendError"}]),
            [{"reason": "backendError", "location": _URI, "message": "Error encountered during execution"}],
            False,
        ),
        # a transient failure of the job, whatever its entries say
        (
            _google(api.ServiceUnavailable, "later"),
            [{"reason": "invalid", "location": _URI, "message": "Error while reading data"}],
            False,
        ),
        # invalid, but of no file of the batch
        (
            _google(api.BadRequest, "Error while reading data", errors=[{"reason": "invalid"}]),
            [{"reason": "invalid", "location": "gs://lake/elsewhere.parquet", "message": "bad"}],
            False,
        ),
    ],
)
def test_only_a_file_bigquery_cannot_read_is_set_aside(
    exc: Exception, job_errors: list[dict[str, str]], set_aside: bool
) -> None:
    corrupt = corrupt_file(_FailedJob(job_errors), exc, _PATHS)
    assert (corrupt is not None) == set_aside
    if corrupt is not None:
        assert corrupt.path == _PATHS[_URI]


def test_bigquery_settings() -> None:
    settings = load_settings(
        {
            "CDCFLOW_WAREHOUSE__BACKEND": "bigquery",
            "CDCFLOW_WAREHOUSE__BIGQUERY_PROJECT": "acme-data",
            "CDCFLOW_WAREHOUSE__BIGQUERY_API_ENDPOINT": "http://127.0.0.1:9050/",
            "CDCFLOW_WAREHOUSE__BIGQUERY_LAKE_URI": "gs://acme-lake/cdc/",
            "CDCFLOW_WAREHOUSE__BIGQUERY_CREDENTIALS_FILE": "/run/secrets/sa.json",
        }
    )
    warehouse = settings.warehouse
    assert (warehouse.bigquery_bronze_dataset, warehouse.bigquery_staging_dataset) == ("bronze", "bronze_staging")
    assert warehouse.bigquery_api_endpoint == "http://127.0.0.1:9050"
    assert warehouse.bigquery_lake_uri == "gs://acme-lake/cdc"
    assert settings.safe_dump()["warehouse"]["bigquery_credentials_file"] == "**********"
    assert settings.loader.max_batch_files <= MAX_URIS_PER_JOB
    for name, value in [
        ("BIGQUERY_BRONZE_DATASET", "bronze-1"),
        ("BIGQUERY_API_ENDPOINT", "localhost:9050"),
        ("BIGQUERY_LAKE_URI", "s3://x"),
    ]:
        with pytest.raises(ConfigError, match=name):
            load_settings({f"CDCFLOW_WAREHOUSE__{name}": value})
