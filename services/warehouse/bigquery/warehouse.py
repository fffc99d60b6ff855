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

How a staged row finds its lake file: :mod:`services.warehouse.bigquery.sql`. Google's exceptions become
the loader's: :mod:`services.warehouse.bigquery.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as api
from google.cloud import bigquery

from services.common.contracts import TableContract
from services.common.errors import CdcflowError
from services.common.lake import Lake
from services.common.sql import googlesql_name, googlesql_string
from services.warehouse.base import LoadedFile, LoadResult
from services.warehouse.bigquery.errors import corrupt_file, error_kind
from services.warehouse.bigquery.sql import (
    PARTITION_COLUMN,
    StagedRange,
    attributed,
    chunked,
    commit_script,
    file_slot,
    load_job_id,
    pruned,
)
from services.warehouse.bigquery.types import (
    HIVE_KEYS,
    bigquery_field,
    bigquery_schema,
    bigquery_widens,
    describe_type,
    refuse_unloadable_columns,
    staging_schema,
    type_changed,
)
from services.warehouse.bronze import (
    COORDINATES,
    MANIFEST_COLUMNS,
    MANIFEST_TABLE,
    BronzeChange,
    LoadBatch,
    bronze_table,
    evolve,
    refuse_names_alike,
)
from services.warehouse.errors import WarehouseError

__all__ = ["BigQueryWarehouse"]

_STAGING_TTL = timedelta(days=1)
_MAX_LISTED_PATHS = 10_000
"""The most lake paths a manifest query names (about 1 MB, far below BigQuery's 10 MB request); a longer
listing (archiving off) reads the table's whole manifest instead."""


class BigQueryWarehouse:
    """Bronze in ``<project>.<bronze_dataset>``; see :class:`~services.warehouse.base.Warehouse`.

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
        return googlesql_name(self._ref(dataset, table))

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
                    bigquery.SchemaField(f.name, bigquery_field(f).field_type, mode="REQUIRED")
                    for f in MANIFEST_COLUMNS
                ],
            )
            manifest.clustering_fields = ["bronze_table", "lake_file"]
            self._client.create_table(manifest, exists_ok=True, retry=self._retry)
        self._datasets_ready = True

    # -- the Warehouse protocol ------------------------------------------------------------------------

    def ensure_bronze(self, contract: TableContract) -> BronzeChange:
        refuse_unloadable_columns(contract)
        refuse_names_alike(contract)
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
                return BronzeChange(added=[f.name for f in wanted], widened=[])
            existing = {f.name: f for f in table.schema}
            change = evolve(
                name,
                existing,
                [(f.name, f) for f in wanted],
                changed=type_changed,
                describe=describe_type,
                widens=bigquery_widens,
            )
            added = [f for f in wanted if f.name in change.added]
            if added:
                # The schema patch is BigQuery's own way; the DDL after it is a no-op there (IF NOT EXISTS) and
                # is what makes the local emulator add the column to its storage too.
                table.schema = [*table.schema, *added]
                self._client.update_table(table, ["schema"], retry=self._retry)
                columns = ", ".join(
                    f"ADD COLUMN IF NOT EXISTS {googlesql_name(f.name)} {describe_type(f)}" for f in added
                )
                self._query(f"ALTER TABLE {self._sql_ref(self._bronze, name)} {columns}")
            for field in (f for f in wanted if f.name in change.widened):
                self._query(
                    f"ALTER TABLE {self._sql_ref(self._bronze, name)}"
                    f" ALTER COLUMN {googlesql_name(field.name)} SET DATA TYPE {describe_type(field)}"
                )
            return change

    def loaded_files(self, contract: TableContract, paths: Collection[str] | None = None) -> set[LoadedFile]:
        if paths is not None and not paths:
            return set()
        self._ensure_datasets()
        sql = f"SELECT lake_file, lake_version FROM {self._manifest} WHERE bronze_table = @bronze_table"
        params: list[Any] = [bigquery.ScalarQueryParameter("bronze_table", "STRING", bronze_table(contract))]
        if paths is not None and len(paths) <= _MAX_LISTED_PATHS:
            sql += " AND lake_file IN UNNEST(@paths)"
            params.append(bigquery.ArrayQueryParameter("paths", "STRING", sorted(set(paths))))
        with self._translated("reading the load manifest"):
            rows = self._query(sql, params)
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
                count, staged, per_file = self._staged_stats(staging, batch)
            if before_commit is not None:
                before_commit()
            with self._translated(f"loading {len(batch.files)} file(s) into bronze.{name}"):
                self._query(
                    commit_script(
                        batch,
                        bronze=self._sql_ref(self._bronze, name),
                        manifest=self._manifest,
                        staging=self._sql_ref(self._staging, staging),
                        staged=staged,
                        per_file=per_file,
                    )
                )
                inserted = self._query(
                    f"SELECT COUNT(*) FROM {self._sql_ref(self._bronze, name)} t"
                    f" WHERE _load_id = {googlesql_string(load_id)} AND {pruned('t', staged)}"
                )
        finally:
            with self._translated(f"dropping staging table {staging}"):
                self._client.delete_table(self._ref(self._staging, staging), not_found_ok=True, retry=self._retry)
        return LoadResult(load_id, len(batch.files), count, int(inserted[0][0]) if inserted else 0)

    def session(self) -> AbstractContextManager[None]:
        return nullcontext()  # every call is a request of its own: nothing to keep open

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
                corrupt = corrupt_file(job, exc, paths)
                if corrupt is not None:
                    raise corrupt from exc
                raise

    def _staged_stats(self, staging: str, batch: LoadBatch) -> tuple[int, StagedRange, dict[str, int]]:
        """Rows staged, the range of their ``_source_ts``, rows attributed per file."""
        table = self._sql_ref(self._staging, staging)
        rows = self._query(
            f"SELECT COUNT(*), MIN({PARTITION_COLUMN}), MAX({PARTITION_COLUMN}),"
            f" COUNTIF({PARTITION_COLUMN} IS NULL) FROM {table}"
        )
        count, low, high, nulls = rows[0][0], rows[0][1], rows[0][2], rows[0][3]
        per_file = {
            str(r[0]): int(r[1])
            for r in self._query(f"SELECT _lake_file, COUNT(*) FROM ({attributed(table, batch)}) GROUP BY _lake_file")
            if r[0] is not None
        }
        return int(count or 0), StagedRange(low, high, bool(nulls)), per_file
