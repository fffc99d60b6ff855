"""Bronze in BigQuery: load jobs from ``gs://`` URIs into a staging table, then one transaction.

A batch is loaded in three steps:

1. A staging table shaped like the lake files (created explicitly, expiring on its own after a day) takes
   the batch's files in load jobs of at most 10,000 URIs each, with an explicit schema derived from the
   contract (``autodetect`` off). Job ids are derived from the batch and the staging table, so a retried
   call finds its job (409) and waits for it instead of loading twice.
2. One multi-statement transaction inserts the staged rows whose ``(_kafka_topic, _kafka_partition,
   _kafka_offset)`` bronze does not hold yet — the probe into bronze is bounded to the days the batch
   covers (bronze is partitioned by day of ``_source_ts`` and clustered on the coordinates) — and records
   the files in the load manifest.
3. The staging table is dropped.

The load jobs read the lake's ``dt=…/hour=…`` folders as hive partition keys, so every staged row carries
the folder it came from. Load jobs carry no source file name, so ``_lake_file`` is attributed from the
writer's naming: a row of partition P staged from folder F comes from F's file of partition P whose offset
range holds the row's offset, the one with the largest first offset when files overlap (a restarted or
zombie writer cut the partition differently; overlapping files hold the same changes).

Google's exceptions become the loader's: transient ones (quota, rate limits, 5xx, network, concurrent
transactions) :class:`WarehouseBusyError`, the rest :class:`WarehouseError`; a load job that cannot read a
file names it in :class:`CorruptFileError`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import requests
from google.api_core import exceptions as api
from google.auth import exceptions as auth
from google.cloud import bigquery

from services.common.contracts import TableContract, lake_schema
from services.common.errors import CdcflowError
from services.common.lake import FileSlot, Lake, LakeLayout, NotALakeFileError
from services.loader.bronze import COORDINATES, LOADER_COLUMNS, LoadBatch, bronze_schema, bronze_table
from services.loader.errors import BronzeSchemaError, CorruptFileError, WarehouseBusyError, WarehouseError
from services.loader.warehouse.base import LoadedFile, LoadResult

__all__ = [
    "HIVE_KEYS",
    "MANIFEST_TABLE",
    "MAX_URIS_PER_JOB",
    "PARTITION_COLUMN",
    "BigQueryWarehouse",
    "bigquery_field",
    "bigquery_schema",
    "chunked",
    "error_kind",
    "file_slot",
    "load_job_id",
    "staging_schema",
]

MAX_URIS_PER_JOB = 10_000
"""BigQuery takes at most 10,000 source URIs in one load job."""

MANIFEST_TABLE = "_cdcflow_load_manifest"
PARTITION_COLUMN = "_source_ts"
"""Bronze is partitioned by day of the change's commit time: every copy of a change has the same value."""

_STAGING_TTL = timedelta(days=1)
_MAX_JOB_ID = 1024
_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
HIVE_KEYS = (("dt", "DATE"), ("hour", "INT64"))
"""The lake's folder levels, read by the load jobs as hive partition keys (the staging table's last columns)."""

_NUMERIC_MAX_SCALE, _NUMERIC_MAX_INTEGER_DIGITS = 9, 29
_BIGNUMERIC_MAX_SCALE, _BIGNUMERIC_MAX_INTEGER_DIGITS = 38, 38

# Errors a later attempt may not hit. The reasons come from BigQuery's error payloads.
_TRANSIENT_API = (
    api.TooManyRequests,
    api.InternalServerError,
    api.BadGateway,
    api.ServiceUnavailable,
    api.GatewayTimeout,
    api.RetryError,  # the client's own retries ran out of time
)
_TRANSIENT_REASONS = frozenset(
    {"rateLimitExceeded", "quotaExceeded", "backendError", "internalError", "jobBackendError"}
)
_TRANSIENT_MESSAGES = ("concurrent update", "could not serialize access", "transaction is aborted")
_TRANSIENT_NETWORK = (
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
    concurrent.futures.TimeoutError,
    auth.TransportError,
)

_SIMPLE_TYPES: dict[pa.DataType, str] = {
    pa.int16(): "INT64",
    pa.int32(): "INT64",
    pa.int64(): "INT64",
    pa.bool_(): "BOOL",
    pa.float32(): "FLOAT64",
    pa.float64(): "FLOAT64",
    pa.string(): "STRING",
    pa.binary(): "BYTES",
    pa.date32(): "DATE",
    pa.time64("us"): "TIME",
}
_LEGACY_TYPES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}


# --- pure logic: types, job ids, chunks, errors --------------------------------------------------------


def bigquery_field(field: pa.Field) -> bigquery.SchemaField:
    """The BigQuery column for an Arrow field of the lake; always NULLABLE (or REPEATED for lists).

    Decimals stay exact: NUMERIC(P, S) while it fits (scale ≤ 9, ≤ 29 integer digits), else BIGNUMERIC(P, S);
    the unconstrained NUMERIC of the contracts (76 digits, scale 38) is plain BIGNUMERIC.
    """
    data_type = field.type
    if pa.types.is_list(data_type):
        item = bigquery_field(pa.field(field.name, data_type.value_type))
        if item.mode == "REPEATED":
            raise WarehouseError(f"column {field.name}: BigQuery has no array of arrays ({data_type})")
        return bigquery.SchemaField(
            field.name, item.field_type, mode="REPEATED", precision=item.precision, scale=item.scale
        )
    if pa.types.is_decimal(data_type):
        precision, scale = data_type.precision, data_type.scale
        if scale <= _NUMERIC_MAX_SCALE and precision - scale <= _NUMERIC_MAX_INTEGER_DIGITS:
            return bigquery.SchemaField(field.name, "NUMERIC", precision=precision, scale=scale)
        if scale == _BIGNUMERIC_MAX_SCALE and precision - scale == _BIGNUMERIC_MAX_INTEGER_DIGITS:
            return bigquery.SchemaField(field.name, "BIGNUMERIC")
        if scale <= _BIGNUMERIC_MAX_SCALE and precision - scale <= _BIGNUMERIC_MAX_INTEGER_DIGITS:
            return bigquery.SchemaField(field.name, "BIGNUMERIC", precision=precision, scale=scale)
        raise WarehouseError(f"column {field.name}: {data_type} does not fit BigQuery's BIGNUMERIC")
    if pa.types.is_timestamp(data_type):
        return bigquery.SchemaField(field.name, "TIMESTAMP" if data_type.tz else "DATETIME")
    if data_type in _SIMPLE_TYPES:
        return bigquery.SchemaField(field.name, _SIMPLE_TYPES[data_type])
    raise WarehouseError(f"column {field.name}: no BigQuery type for {data_type}")


def bigquery_schema(contract: TableContract) -> list[bigquery.SchemaField]:
    """Bronze's columns: the lake's (row image, then the writer's metadata) and the loader's own."""
    return [bigquery_field(f) for f in bronze_schema(contract)]


def staging_schema(contract: TableContract) -> list[bigquery.SchemaField]:
    """The staging table: the lake file's columns in the file's order, then the folder's hive keys."""
    fields = [bigquery_field(f.with_nullable(True)) for f in lake_schema(contract)]
    return [*fields, *(bigquery.SchemaField(name, kind) for name, kind in HIVE_KEYS)]


def load_job_id(table: str, load_id: str, staging_created_ms: int, chunk: int) -> str:
    """The id of one load job of a batch: the same inputs give the same id, so a retry finds its job.

    The staging table's creation time is part of it: a batch retried after a crash loads into a new staging
    table and must not be taken for the finished job that filled the dropped one.
    """
    readable = _JOB_ID_UNSAFE.sub("_", f"cdcflow_load_{table}")
    suffix = f"_{load_id}_{staging_created_ms}_{chunk}"
    if len(readable) + len(suffix) > _MAX_JOB_ID:
        readable = readable[: _MAX_JOB_ID - len(suffix) - 17] + "_" + hashlib.sha256(table.encode()).hexdigest()[:16]
    return readable + suffix


def chunked(items: Sequence[str], size: int = MAX_URIS_PER_JOB) -> list[Sequence[str]]:
    """``items`` in order, cut into runs of at most ``size``."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [items[start : start + size] for start in range(0, len(items), size)]


def error_kind(exc: BaseException) -> type[CdcflowError] | None:
    """Which loader error a Google client exception means; ``None`` when it is not a BigQuery error.

    Transient (:class:`WarehouseBusyError`): 429 and 5xx, rate limits and quota (they reset), a transaction
    aborted by a concurrent one, the client's retries running out of time, network failures. Everything else
    the API refuses (bad SQL, a missing dataset, no permission) fails the same way again: :class:`WarehouseError`.
    """
    if isinstance(exc, (*_TRANSIENT_API, *_TRANSIENT_NETWORK)):
        return WarehouseBusyError
    if isinstance(exc, api.GoogleAPICallError):
        reasons = {str(e.get("reason", "")) for e in exc.errors if isinstance(e, dict)}
        transient = reasons & _TRANSIENT_REASONS or any(m in str(exc.message).lower() for m in _TRANSIENT_MESSAGES)
        return WarehouseBusyError if transient else WarehouseError
    if isinstance(exc, auth.GoogleAuthError):
        return WarehouseBusyError if getattr(exc, "retryable", False) else WarehouseError
    if isinstance(exc, api.GoogleAPIError):
        return WarehouseError
    return None


def _normalized(field: bigquery.SchemaField) -> tuple[str, str]:
    field_type = _LEGACY_TYPES.get(field.field_type.upper(), field.field_type.upper())
    return field_type, "REPEATED" if field.mode == "REPEATED" else "NULLABLE"


def _describe(field: bigquery.SchemaField) -> str:
    """The column's type in GoogleSQL DDL: ``NUMERIC(20, 2)``, ``ARRAY<STRING>``."""
    field_type, mode = _normalized(field)
    params = f"({field.precision}, {field.scale})" if field.precision is not None else ""
    return f"ARRAY<{field_type}{params}>" if mode == "REPEATED" else f"{field_type}{params}"


def _changed(existing: bigquery.SchemaField, wanted: bigquery.SchemaField) -> bool:
    if _normalized(existing) != _normalized(wanted):
        return True
    # BigQuery reports the parameters it enforces; a table without them (created by hand) is not refused.
    return existing.precision is not None and (existing.precision, existing.scale) != (wanted.precision, wanted.scale)


def _quote(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _text(value: str) -> str:
    """A GoogleSQL string literal (scripts take no query parameters on every endpoint we run against)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def _timestamp(value: datetime) -> str:
    return f"TIMESTAMP '{value.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


def file_slot(path: str) -> FileSlot:
    """The parts of a lake file's path; a path the writer cannot have written is a :class:`WarehouseError`."""
    try:
        return LakeLayout.parse(path)
    except NotALakeFileError as exc:
        raise WarehouseError(str(exc)) from exc


# --- the warehouse ----------------------------------------------------------------------------------------


class BigQueryWarehouse:
    """Bronze in ``<project>.<bronze_dataset>``; see :class:`~services.loader.warehouse.base.Warehouse`.

    ``lake_uri`` is the lake root as BigQuery reads it (``gs://bucket/prefix``); empty means the lake's own
    URIs, which must then be ``gs://`` ones (the gcs lake).
    """

    def __init__(
        self,
        client: bigquery.Client,
        *,
        project: str,
        bronze_dataset: str = "bronze",
        staging_dataset: str = "bronze_staging",
        location: str = "US",
        lake_uri: str = "",
        job_timeout_s: float = 600.0,
        retry_deadline_s: float = 60.0,
        owns_client: bool = True,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._project = project
        self._bronze = bronze_dataset
        self._staging = staging_dataset
        self._location = location
        self._lake_uri = lake_uri.rstrip("/")
        self._job_timeout_s = job_timeout_s
        self._retry = bigquery.DEFAULT_RETRY.with_deadline(retry_deadline_s).with_timeout(retry_deadline_s)
        self._owns_client = owns_client
        self._datasets_ready = False
        self._on_progress = on_progress or (lambda: None)  # after every job: a long load is still progress

    # -- names ---------------------------------------------------------------------------------------

    def _ref(self, dataset: str, table: str) -> str:
        return f"{self._project}.{dataset}.{table}"

    def _sql_ref(self, dataset: str, table: str) -> str:
        return _quote(self._ref(dataset, table))

    @property
    def _manifest(self) -> str:
        return self._sql_ref(self._bronze, MANIFEST_TABLE)

    def _uri(self, lake: Lake, path: str) -> str:
        if self._lake_uri:
            return f"{self._lake_uri}/{path}"
        uri = lake.uri(path)
        if not uri.startswith("gs://"):
            raise WarehouseError(
                f"BigQuery loads from gs:// URIs, but the lake gives {uri}: use the gcs lake or set"
                " CDCFLOW_WAREHOUSE__BIGQUERY_LAKE_URI to the lake root as BigQuery reads it"
            )
        return uri

    # -- Google errors → the loader's ---------------------------------------------------------------

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        try:
            yield
        except CdcflowError:
            raise
        except Exception as exc:
            kind = error_kind(exc)
            if kind is None:
                raise
            raise kind(f"bigquery: {doing} failed: {exc}") from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        config = bigquery.QueryJobConfig(query_parameters=list(params))
        job = self._client.query(sql, job_config=config, location=self._location, retry=self._retry)
        rows = list(job.result(timeout=self._job_timeout_s, retry=self._retry))
        self._on_progress()
        return rows

    # -- datasets ----------------------------------------------------------------------------------

    def _ensure_datasets(self) -> None:
        if self._datasets_ready:
            return
        with self._translated("creating the bronze datasets"):
            for name, expiry in ((self._bronze, None), (self._staging, _STAGING_TTL)):
                dataset = bigquery.Dataset(f"{self._project}.{name}")
                dataset.location = self._location
                if expiry is not None:  # a staging table a crash left behind goes away by itself
                    dataset.default_table_expiration_ms = int(expiry.total_seconds() * 1000)
                self._client.create_dataset(dataset, exists_ok=True, retry=self._retry)
            manifest = bigquery.Table(
                self._ref(self._bronze, MANIFEST_TABLE),
                schema=[
                    bigquery.SchemaField("load_id", "STRING", mode="REQUIRED"),
                    bigquery.SchemaField("bronze_table", "STRING", mode="REQUIRED"),
                    bigquery.SchemaField("lake_file", "STRING", mode="REQUIRED"),
                    bigquery.SchemaField("lake_version", "STRING", mode="REQUIRED"),
                    bigquery.SchemaField("rows", "INT64", mode="REQUIRED"),
                    bigquery.SchemaField("loaded_at", "TIMESTAMP", mode="REQUIRED"),
                ],
            )
            manifest.clustering_fields = ["bronze_table", "lake_file"]
            self._client.create_table(manifest, exists_ok=True, retry=self._retry)
        self._datasets_ready = True

    # -- the Warehouse protocol ------------------------------------------------------------------------

    def ensure_bronze(self, contract: TableContract) -> list[str]:
        self._ensure_datasets()
        name = bronze_table(contract)
        wanted = bigquery_schema(contract)
        with self._translated(f"preparing bronze.{name}"):
            try:
                table = self._client.get_table(self._ref(self._bronze, name), retry=self._retry)
            except api.NotFound:
                table = bigquery.Table(self._ref(self._bronze, name), schema=wanted)
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field=PARTITION_COLUMN
                )
                table.clustering_fields = list(COORDINATES)
                table.description = f"Change log of {contract.qualified_name} (cdcflow bronze)."
                self._client.create_table(table, retry=self._retry)
                return [f.name for f in wanted]
            existing = {f.name: f for f in table.schema}
            changed = [f for f in wanted if f.name in existing and _changed(existing[f.name], f)]
            if changed:
                detail = ", ".join(f"{f.name}: {_describe(existing[f.name])} → {_describe(f)}" for f in changed)
                raise BronzeSchemaError(f"bronze.{name}: incompatible change ({detail}); bronze only adds columns")
            added = [f for f in wanted if f.name not in existing]
            if added:
                # The schema patch is BigQuery's own way; the DDL after it is a no-op there (IF NOT EXISTS) and
                # is what makes the local emulator add the column to its storage too.
                table.schema = [*table.schema, *added]
                self._client.update_table(table, ["schema"], retry=self._retry)
                columns = ", ".join(f"ADD COLUMN IF NOT EXISTS {_quote(f.name)} {_describe(f)}" for f in added)
                self._query(f"ALTER TABLE {self._sql_ref(self._bronze, name)} {columns}")
            return [f.name for f in added]

    def loaded_files(self, contract: TableContract) -> set[LoadedFile]:
        self._ensure_datasets()
        with self._translated("reading the load manifest"):
            rows = self._query(
                f"SELECT lake_file, lake_version FROM {self._manifest} WHERE bronze_table = @bronze_table",
                [bigquery.ScalarQueryParameter("bronze_table", "STRING", bronze_table(contract))],
            )
        return {LoadedFile(str(r[0]), str(r[1])) for r in rows}

    def load(self, batch: LoadBatch, lake: Lake, *, before_commit: Callable[[], None] | None = None) -> LoadResult:
        self._ensure_datasets()
        contract, load_id = batch.contract, batch.load_id
        name = bronze_table(contract)
        uris = {self._uri(lake, f.path): f.path for f in batch.files}
        roots = {file_slot(f.path).table_folder for f in batch.files}
        if len(roots) != 1:
            raise WarehouseError(f"a batch of bronze.{name} spans several lake folders: {sorted(roots)}")
        hive_prefix = self._uri(lake, roots.pop())
        staging = batch.staging
        try:
            created_ms = self._create_staging(staging, contract)
            for chunk, part in enumerate(chunked(list(uris))):
                job_id = load_job_id(name, load_id, created_ms, chunk)
                self._load_chunk(staging, part, uris, hive_prefix, job_id)
            with self._translated(f"staging {len(batch.files)} file(s) for bronze.{name}"):
                staged, bounds, per_file = self._staged_stats(staging, batch)
            if before_commit is not None:
                before_commit()
            with self._translated(f"loading {len(batch.files)} file(s) into bronze.{name}"):
                self._query(self._commit_script(batch, staging, bounds, per_file))
                inserted = self._query(
                    f"SELECT COUNT(*) FROM {self._sql_ref(self._bronze, name)} t"
                    f" WHERE _load_id = {_text(load_id)} AND {self._pruned('t', bounds)}"
                )
        finally:
            with self._translated(f"dropping staging table {staging}"):
                self._client.delete_table(self._ref(self._staging, staging), not_found_ok=True, retry=self._retry)
        return LoadResult(load_id, len(batch.files), staged, int(inserted[0][0]) if inserted else 0)

    def max_source_ts(self, contract: TableContract) -> datetime | None:
        name = bronze_table(contract)
        with self._translated(f"reading bronze.{name}"):
            try:
                self._client.get_table(self._ref(self._bronze, name), retry=self._retry)
            except api.NotFound:
                return None
            rows = self._query(f"SELECT MAX({PARTITION_COLUMN}) FROM {self._sql_ref(self._bronze, name)}")
        value = rows[0][0] if rows else None
        return value if isinstance(value, datetime) else None

    def drop_stale_staging(self) -> Sequence[str]:
        """Staging tables older than the longest a load may take: left by a crash (a live loader's are younger)."""
        self._ensure_datasets()
        cutoff = datetime.now(UTC) - timedelta(seconds=self._job_timeout_s)
        dropped = []
        with self._translated("listing staging tables"):
            for item in self._client.list_tables(f"{self._project}.{self._staging}", retry=self._retry):
                if item.created is not None and item.created > cutoff:
                    continue
                self._client.delete_table(item.reference, not_found_ok=True, retry=self._retry)
                dropped.append(str(item.table_id))
        return dropped

    def close(self) -> None:
        if self._owns_client:
            self._client.close()  # type: ignore[no-untyped-call]  # the client leaves close() untyped

    # -- steps of a load ---------------------------------------------------------------------------------

    def _create_staging(self, staging: str, contract: TableContract) -> int:
        """A fresh staging table shaped like the lake files; returns its creation time in milliseconds."""
        with self._translated(f"creating staging table {staging}"):
            ref = self._ref(self._staging, staging)
            self._client.delete_table(ref, not_found_ok=True, retry=self._retry)  # a failed attempt's leftovers
            table = bigquery.Table(ref, schema=staging_schema(contract))
            table.expires = datetime.now(UTC) + _STAGING_TTL
            created = self._client.create_table(table, retry=self._retry)
        stamp = created.created or datetime.now(UTC)
        return int(stamp.timestamp() * 1000)

    def _load_chunk(
        self, staging: str, uris: Sequence[str], paths: dict[str, str], hive_prefix: str, job_id: str
    ) -> None:
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=[],  # set below: the staging table's own columns
            autodetect=False,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            decimal_target_types=["NUMERIC", "BIGNUMERIC"],
        )
        parquet = bigquery.ParquetOptions()  # type: ignore[no-untyped-call]
        parquet.enable_list_inference = True
        config.parquet_options = parquet
        hive = bigquery.HivePartitioningOptions()
        hive.mode = "CUSTOM"
        hive.source_uri_prefix = (
            hive_prefix + "/" + "/".join(f"{{{k}:{t.replace('INT64', 'INTEGER')}}}" for k, t in HIVE_KEYS)
        )
        config.hive_partitioning = hive
        destination = self._ref(self._staging, staging)
        with self._translated(f"loading {len(uris)} file(s) into {staging}"):
            config.schema = self._client.get_table(destination, retry=self._retry).schema
            job: Any
            try:
                job = self._client.load_table_from_uri(
                    list(uris),
                    destination,
                    job_id=job_id,
                    job_config=config,
                    location=self._location,
                    retry=self._retry,
                )
            except api.Conflict:  # an earlier attempt of this very call created the job: wait for it
                job = self._client.get_job(job_id, location=self._location, retry=self._retry)
            try:
                job.result(timeout=self._job_timeout_s, retry=self._retry)
                self._on_progress()
            except api.GoogleAPICallError as exc:
                corrupt = _corrupt_file(job, exc, paths)
                if corrupt is not None:
                    raise corrupt from exc
                raise

    def _staged_stats(
        self, staging: str, batch: LoadBatch
    ) -> tuple[int, tuple[datetime | None, datetime | None, bool], dict[str, int]]:
        """Rows staged, the range of ``_source_ts`` (and whether some are NULL), rows attributed per file."""
        table = self._sql_ref(self._staging, staging)
        rows = self._query(
            f"SELECT COUNT(*), MIN({PARTITION_COLUMN}), MAX({PARTITION_COLUMN}),"
            f" COUNTIF({PARTITION_COLUMN} IS NULL) FROM {table}"
        )
        count, low, high, nulls = rows[0][0], rows[0][1], rows[0][2], rows[0][3]
        per_file = {
            str(r[0]): int(r[1])
            for r in self._query(
                f"SELECT _lake_file, COUNT(*) FROM ({self._attributed(staging, batch)}) GROUP BY _lake_file"
            )
            if r[0] is not None
        }
        return int(count or 0), (low, high, bool(nulls)), per_file

    def _attributed(self, staging: str, batch: LoadBatch) -> str:
        """Staged rows, one per Kafka coordinate, each with the lake file it came from (see the module doc)."""
        table = self._sql_ref(self._staging, staging)
        key = ", ".join(f"s.{c}" for c in COORDINATES)
        files = ", ".join(
            f"STRUCT({_text(f.path)} AS path, DATE {_text(f.dt.isoformat())} AS dt, {f.hour} AS hour,"
            f" {f.partition} AS part, {f.first_offset} AS first_offset,"
            f" {'NULL' if f.last_offset is None else f.last_offset} AS last_offset)"
            for f in (file_slot(file.path) for file in batch.files)
        )
        return (
            f"SELECT s.*, f.path AS _lake_file FROM {table} s LEFT JOIN UNNEST([{files}]) f"
            " ON f.dt = s.dt AND f.hour = s.hour AND f.part = s._kafka_partition AND f.first_offset <= s._kafka_offset"
            " AND (f.last_offset IS NULL OR s._kafka_offset <= f.last_offset)"
            f" WHERE TRUE QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY f.first_offset DESC) = 1"
        )

    def _pruned(self, alias: str, bounds: tuple[datetime | None, datetime | None, bool]) -> str:
        """The bronze partitions a batch's rows can already be in: the days of its ``_source_ts`` range."""
        low, high, nulls = bounds
        column = f"{alias}.{PARTITION_COLUMN}"
        ranges = []
        if low is not None and high is not None:
            ranges.append(f"{column} BETWEEN {_timestamp(low)} AND {_timestamp(high)}")
        if nulls or not ranges:
            ranges.append(f"{column} IS NULL")
        return "(" + " OR ".join(ranges) + ")"

    def _commit_script(
        self,
        batch: LoadBatch,
        staging: str,
        bounds: tuple[datetime | None, datetime | None, bool],
        per_file: dict[str, int],
    ) -> str:
        contract, load_id = batch.contract, batch.load_id
        name = bronze_table(contract)
        bronze = self._sql_ref(self._bronze, name)
        loader_columns = {c.name for c in LOADER_COLUMNS}
        columns = [_quote(f.name) for f in bronze_schema(contract) if f.name not in loader_columns]
        column_list = ", ".join(columns)
        selected = ", ".join(f"a.{c}" for c in columns)
        probe = " AND ".join(f"t.{c} = a.{c}" for c in COORDINATES)
        manifest_rows = ", ".join(
            f"STRUCT({_text(load_id)} AS load_id, {_text(name)} AS bronze_table, {_text(f.path)} AS lake_file,"
            f" {_text(f.version)} AS lake_version, {per_file.get(f.path, 0)} AS rows)"
            for f in batch.files
        )
        return f"""
BEGIN TRANSACTION;
INSERT INTO {bronze} ({column_list}, _lake_file, _load_id, _loaded_at)
SELECT {selected}, a._lake_file, {_text(load_id)}, CURRENT_TIMESTAMP()
FROM ({self._attributed(staging, batch)}) a
WHERE NOT EXISTS (SELECT 1 FROM {bronze} t WHERE {self._pruned("t", bounds)} AND {probe});
INSERT INTO {self._manifest} (load_id, bronze_table, lake_file, lake_version, rows, loaded_at)
SELECT m.load_id, m.bronze_table, m.lake_file, m.lake_version, m.rows, CURRENT_TIMESTAMP()
FROM UNNEST([{manifest_rows}]) m
WHERE NOT EXISTS (
  SELECT 1 FROM {self._manifest} x WHERE x.lake_file = m.lake_file AND x.lake_version = m.lake_version
);
COMMIT TRANSACTION;
"""


def _corrupt_file(job: Any, exc: Exception, paths: dict[str, str]) -> CorruptFileError | None:
    """The lake file a failed load job could not read, when its errors name one."""
    details = [exc.message if isinstance(exc, api.GoogleAPICallError) else str(exc)]
    for error in getattr(job, "errors", None) or []:
        if isinstance(error, dict):
            details.extend(str(error.get(k, "")) for k in ("location", "message"))
    for uri, path in paths.items():
        local_tail = uri.removeprefix("gs://")
        if any(uri in d or local_tail in d for d in details):
            reason = "; ".join(d for d in details if d)
            return CorruptFileError(path, f"not loadable as Parquet of its table: {reason}")
    return None
