"""The loader's cycle: list the lake, find files bronze does not hold, load them per table in batches.

A file is identified by path *and* version, so a file the writer overwrote after a crash is loaded again;
the warehouse's dedup on Kafka coordinates keeps every change once. A file that cannot be read moves to
the failed prefix with its reason, and the rest of its batch loads. A table whose bronze cannot take its
contract, or whose batch the warehouse refuses, stops with a clear error and a metric until the next cycle;
the other tables go on.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.common.contracts import ContractRegistry, TableContract
from services.common.contracts.errors import UnknownTableError
from services.common.contracts.store import ContractReader, ContractSet
from services.common.errors import TransientError
from services.common.health import Heartbeat
from services.common.lake import (
    Lake,
    LakeFile,
    LakeLayout,
    LakeNotFoundError,
    LakeTransientError,
    LakeVersionChangedError,
    NotALakeFileError,
)
from services.common.logging import get_logger
from services.common.metrics import LoaderMetrics
from services.common.settings import LoaderSettings
from services.common.signals import Shutdown
from services.loader.lease import ShardLease
from services.warehouse import Warehouse
from services.warehouse.bronze import LoadBatch
from services.warehouse.errors import BronzeSchemaError, CorruptFileError, WarehouseBusyError, WarehouseError

__all__ = ["CycleReport", "Loader"]

log = get_logger(__name__)


class LeaseLostError(Exception):
    """Another loader took this shard's lease while a batch was staged: the batch is not committed."""


# How long one warehouse session serves the tables of a cycle before it is closed and opened again. On DuckDB
# an open reads the whole catalog and the last close checkpoints: per table, with 50 bronze tables, half of a
# small table's load (BENCHMARKS.md, "Many tables, little change"). Renewed this often, another process that
# wants the file (dbt, `cdcflow verify`) still finds it free within this long plus one table's load.
SESSION_HOLD_S = 1.0


@dataclass(slots=True)
class CycleReport:
    files: int = 0
    rows_inserted: int = 0
    duplicates_skipped: int = 0
    failed_files: list[str] = field(default_factory=list)
    stopped_tables: list[str] = field(default_factory=list)
    deferred_tables: list[str] = field(default_factory=list)  # a transient error: retried next cycle
    busy: bool = False
    standby: bool = False  # another loader holds this shard's lease


class Loader:
    def __init__(
        self,
        settings: LoaderSettings,
        *,
        topic_prefix: str,
        other_prefixes: Sequence[str] = (),
        lake: Lake,
        warehouse: Warehouse,
        metrics: LoaderMetrics,
        shutdown: Shutdown,
        heartbeat: Heartbeat | None = None,
        lease: ShardLease | None = None,
        before_commit: Callable[[], None] | None = None,
        on_loaded: Callable[[str], None] | None = None,
    ) -> None:
        """``before_commit`` runs after each batch is staged, before its commit (a test's crash goes there);
        ``on_loaded`` gets a table's full name after each batch that inserted rows into its bronze."""
        self._settings = settings
        # the primary source's prefix first, then every other source's: where their lake files are
        self._prefixes = [topic_prefix, *sorted(set(other_prefixes) - {topic_prefix})]
        self._lake = lake
        self._warehouse = warehouse
        self._metrics = metrics
        self._shutdown = shutdown
        self._last_load: dict[str, float] = {}
        self._contract_reader = ContractReader(settings.contracts_dir, lake)
        self._registry: tuple[ContractSet, ContractRegistry] | None = None  # the contracts it was built of
        # per table, the listed files (path, version) known to be in bronze: the manifest is asked only about
        # the others, so a cycle costs what changed, not every captured table's manifest lookup
        self._loaded: dict[str, set[tuple[str, str]]] = {}
        # per listed lake file, its table: a path is parsed (and validated) once, not every cycle; only the
        # files of the last listing are kept
        self._table_of: dict[str, str] = {}
        self.heartbeat = heartbeat or Heartbeat()
        self._lease = lease
        self._before_commit = before_commit
        self._on_loaded = on_loaded

    def mark_progress(self) -> None:
        """The loader is not stuck: it began or ended a step (a cycle, a table, a batch)."""
        self.heartbeat.beat()

    def run(self, *, once: bool) -> int:
        cleaned = False
        while True:
            began = time.monotonic()
            self.mark_progress()
            if not self._leads():
                # only the shard's leaseholder touches the warehouse: the staging tables a standby would
                # drop as stale may be the leaseholder's, in use
                cleaned = False
                report = CycleReport(standby=True)
            else:
                cleaned = cleaned or self._drop_stale_staging()
                report = self.cycle(leased=True) if cleaned else CycleReport(busy=True)
            self.mark_progress()
            if once:
                if report.standby:
                    log.warning("loader.standby", why="another loader holds this shard's lease; it loads the files")
                return 1 if report.stopped_tables else 0
            # the interval is a period, not a pause: a file waits at most one interval plus one cycle
            if self._shutdown.wait(max(0.0, self._settings.interval_s - (time.monotonic() - began))):
                return 0

    def release_lease(self) -> None:
        """On a clean stop: let the next loader of this shard start at once."""
        if self._lease is not None:
            self._lease.release()

    def _leads(self) -> bool:
        """:meth:`_holds_lease`, with a storage error read as "not now" (the next cycle asks again)."""
        try:
            return self._holds_lease()
        except TransientError as exc:
            log.warning("loader.lease_unknown", error=str(exc))
            return False

    def _holds_lease(self) -> bool:
        """Whether this loader may load now: it holds (and has just renewed) its shard's lease, if it has one."""
        return self._lease is None or self._lease.hold()

    def _commit_check(self) -> None:
        """Between staging a batch and committing it, renew the lease, or commit nothing: a batch of slow load jobs
        may outlast the lease renewed before it, and a loader that took the lease meanwhile loads the same files —
        two commits of one batch on a warehouse whose concurrent inserts do not see each other (BigQuery). After
        the renewal the lease outlives the commit, one job with its retries
        (:func:`services.loader.wiring.stalled_after_s`)."""
        if not self._holds_lease():
            raise LeaseLostError("another loader took the shard's lease while the batch was staged")
        if self._before_commit is not None:
            self._before_commit()

    def _drop_stale_staging(self) -> bool:
        """Drop staging tables a crash left behind; False while the warehouse is busy (the next cycle tries again)."""
        try:
            stale = self._warehouse.drop_stale_staging()
        except TransientError as exc:  # e.g. a transform run holds the DuckDB file
            log.warning("loader.warehouse_busy", error=str(exc))
            return False
        if stale:
            log.info("loader.dropped_stale_staging", tables=list(stale))
        return True

    def cycle(self, *, leased: bool = False) -> CycleReport:
        """One cycle; ``leased``: the caller has just taken or renewed the shard's lease (no second write)."""
        report = CycleReport()
        contracts = ContractRegistry()
        try:
            if not leased and not self._holds_lease():
                report.standby = True
                return report
            listed = self._listed_by_table()  # before the contracts: a writer publishes a version before its files
            contracts, broken = self._contracts()
            pending = self._pending_by_table(self._without_broken(listed, broken, report), contracts)
        except TransientError as exc:  # the lake or the warehouse is unreachable or busy: the next cycle
            log.warning("loader.cycle_deferred", error=str(exc))
            self._metrics.failures.labels("", "transient").inc()
            report.busy = True
            pending = {}
        with _HeldSession(self._warehouse, SESSION_HOLD_S) as session:
            for table, files in sorted(pending.items()):
                if self._shutdown.requested or report.busy or report.standby:
                    break
                self.mark_progress()
                try:
                    self._load_table(table, _contract_of(contracts, table), files, report, session)
                except TransientError as exc:  # this table retries next cycle; the others go on
                    session.close()  # the next table opens the warehouse afresh, or finds it busy
                    log.warning("loader.table_deferred", table=table, error=str(exc))
                    self._metrics.failures.labels(table, "transient").inc()
                    report.deferred_tables.append(table)
                    report.busy = isinstance(exc, WarehouseBusyError) and exc.whole_warehouse
        log.info(
            "loader.cycle",
            files=report.files,
            rows=report.rows_inserted,
            duplicates=report.duplicates_skipped,
            failed=len(report.failed_files),
            stopped=report.stopped_tables,
            deferred=report.deferred_tables,
        )
        return report

    # --- discovery ------------------------------------------------------------------------------

    def _contracts(self) -> tuple[ContractRegistry, dict[str, str]]:
        """The repository's contracts plus every version the writers published (read again when one changed), and
        why each contract file that holds no valid contract does not, by the table it is named for."""
        read = self._contract_reader.read()
        if self._registry is None or self._registry[0] is not read:
            self._registry = (read, ContractRegistry.of(read.contracts))
        return self._registry[1], read.broken

    def _without_broken(
        self, listed: dict[str, list[LakeFile]], broken: dict[str, str], report: CycleReport
    ) -> dict[str, list[LakeFile]]:
        """``listed`` without the tables of a broken contract file, each of which stops (on a version it cannot
        read, a file would load with an older one and lose its new columns): its files wait for the file's fix,
        and every other table loads."""
        for table in sorted(broken.keys() & listed.keys()):
            if self._mine(table):
                log.error("loader.table_stopped", table=table, error=broken[table])
                self._metrics.failures.labels(table, "contract").inc()
                report.stopped_tables.append(table)
        return {table: files for table, files in listed.items() if table not in broken}

    def _mine(self, table: str) -> bool:
        index, count = self._settings.shard_of()
        return zlib.crc32(table.encode()) % count == index

    def _listed_by_table(self) -> dict[str, list[LakeFile]]:
        """Every listed lake file, by the table it belongs to (``schema.table`` or ``prefix/schema.table``)."""
        by_table: dict[str, list[LakeFile]] = defaultdict(list)
        known_tables, self._table_of = self._table_of, {}
        for prefix in self._prefixes:
            for file in self._lake.list(f"{prefix}/"):
                if not file.path.endswith(".parquet"):
                    continue
                table = known_tables.get(file.path) or self._table_of_file(prefix, file.path)
                if table is not None:
                    self._table_of[file.path] = table
                    by_table[table].append(file)
        return by_table

    def _pending_by_table(
        self, by_table: dict[str, list[LakeFile]], contracts: ContractRegistry
    ) -> dict[str, list[LakeFile]]:
        """Per table of this shard, its listed files not known to be in bronze. Nothing here asks the warehouse:
        the manifest is asked about a table's files when it loads (:meth:`_load_table`). ``contracts`` must be
        read after the listing, so that it holds the version of every listed file."""
        pending: dict[str, list[LakeFile]] = {}
        known = self._loaded
        self._loaded = {}  # only tables with files in place: what was archived or set aside is forgotten
        for table, files in by_table.items():
            if not self._mine(table):
                continue
            try:
                contract = _contract_of(contracts, table)
            except (UnknownTableError, TypeError):
                log.warning("loader.no_contract", table=table, files=len(files))
                continue
            listed = {(f.path, f.version) for f in files}
            loaded = self._loaded[contract.full_name] = known.get(contract.full_name, set()) & listed
            self._archive([f for f in files if (f.path, f.version) in loaded])  # an earlier archive that failed
            unknown = [f for f in files if (f.path, f.version) not in loaded]
            self._set_pending(table, unknown)
            if unknown:
                pending[table] = unknown
        return pending

    def _table_of_file(self, prefix: str, path: str) -> str | None:
        """The table a listed file belongs to (``schema.table``, or ``prefix/schema.table`` for another source's);
        None, with a warning, for a path that is not a lake file's."""
        try:
            slot = LakeLayout.parse(path)
        except NotALakeFileError as exc:
            log.warning("loader.not_a_lake_file", path=path, error=str(exc))
            return None
        return slot.qualified_table if prefix == self._prefixes[0] else f"{prefix}/{slot.qualified_table}"

    def _set_pending(self, table: str, files: list[LakeFile]) -> None:
        self._metrics.pending_files.labels(table).set(len(files))
        self._metrics.pending_bytes.labels(table).set(sum(f.size for f in files))

    def _not_loaded(self, table: str, contract: TableContract, files: list[LakeFile]) -> list[LakeFile]:
        """Of ``files`` (not known to be in bronze), those the manifest does not hold either. Only the listed
        files' rows are asked for, so with archiving on the cost follows the files still in place, not every
        file ever loaded; a file found there is known from then on (a file once in the manifest stays there)."""
        listed = {(f.path, f.version) for f in files}
        in_bronze = {(f.path, f.version) for f in self._warehouse.loaded_files(contract, [f.path for f in files])}
        self._loaded.setdefault(contract.full_name, set()).update(in_bronze & listed)
        self._archive([f for f in files if (f.path, f.version) in in_bronze])
        new = [f for f in files if (f.path, f.version) not in in_bronze]
        self._set_pending(table, new)
        return new

    # --- loading --------------------------------------------------------------------------------

    def _load_table(
        self, table: str, contract: TableContract, files: list[LakeFile], report: CycleReport, session: _HeldSession
    ) -> None:
        """``files``: the table's listed files not known to be in bronze. The manifest's answer about them and
        the load of the rest run in the cycle's session (on DuckDB an open reads the whole catalog)."""
        since = time.monotonic() - self._last_load.get(contract.full_name, float("-inf"))
        if since < self._settings.min_table_interval_s:
            return
        session.ensure()
        new = self._not_loaded(table, contract, files)
        if new:
            self._load_files(contract, new, report)

    def _load_files(self, contract: TableContract, files: list[LakeFile], report: CycleReport) -> None:
        table = contract.full_name
        try:
            change = self._warehouse.ensure_bronze(contract)
        except (BronzeSchemaError, WarehouseError) as exc:  # what bronze cannot take stops this table, not all
            log.error("loader.table_stopped", table=table, error=str(exc))
            self._metrics.failures.labels(table, "schema").inc()
            report.stopped_tables.append(table)
            return
        if change.added or change.widened:
            log.info("loader.bronze_columns", table=table, added=change.added, widened=change.widened)
        for batch in self._batches(contract, files):
            if not self._holds_lease():  # renewed before every batch: a lost lease stops loading at once
                report.standby = True
                return
            try:
                self._load_batch(batch, report)
            except LeaseLostError:
                log.warning("loader.lease_lost", table=table, files=len(batch.files), why="not committed")
                report.standby = True
                return
            except (BronzeSchemaError, WarehouseError) as exc:  # a retry will not fix it: this table waits, not all
                log.error("loader.table_stopped", table=table, error=str(exc))
                self._metrics.failures.labels(
                    table, "schema" if isinstance(exc, BronzeSchemaError) else "warehouse"
                ).inc()
                report.stopped_tables.append(table)
                return
        self._last_load[table] = time.monotonic()
        newest = self._warehouse.max_source_ts(contract)
        if newest is not None:
            self._metrics.bronze_freshness.labels(table).set((datetime.now(UTC) - newest).total_seconds())

    def _batches(self, contract: TableContract, files: list[LakeFile]) -> Iterable[LoadBatch]:
        batch: list[LakeFile] = []
        size = 0
        for file in sorted(files, key=lambda f: f.path):
            if batch and (
                len(batch) >= self._settings.max_batch_files or size + file.size > self._settings.max_batch_bytes
            ):
                yield LoadBatch(contract, tuple(batch))
                batch, size = [], 0
            batch.append(file)
            size += file.size
        if batch:
            yield LoadBatch(contract, tuple(batch))

    def _load_batch(self, batch: LoadBatch, report: CycleReport) -> None:
        table = batch.contract.full_name
        while batch.files:
            self.mark_progress()
            began = time.monotonic()
            try:
                result = self._warehouse.load(batch, self._lake, before_commit=self._commit_check)
            except CorruptFileError as exc:
                self._set_aside(exc, next((f.version for f in batch.files if f.path == exc.path), None))
                report.failed_files.append(exc.path)
                self._metrics.failures.labels(table, "corrupt_file").inc()
                batch = LoadBatch(batch.contract, tuple(f for f in batch.files if f.path != exc.path))
                continue
            except LakeNotFoundError as exc:  # moved or replaced since the listing: next cycle sees it
                log.info("loader.file_gone", table=table, error=str(exc))
                return
            self._metrics.batch_duration.labels(table).observe(time.monotonic() - began)
            self._metrics.files_loaded.labels(table).inc(result.files)
            self._metrics.rows_loaded.labels(table).inc(result.rows_inserted)
            self._metrics.last_success.labels(table).set(time.time())
            self._loaded.setdefault(table, set()).update((f.path, f.version) for f in batch.files)
            report.files += result.files
            report.rows_inserted += result.rows_inserted
            report.duplicates_skipped += result.duplicates_skipped
            if result.rows_inserted and self._on_loaded is not None:  # before the log line, which says "in bronze"
                self._on_loaded(table)
            log.info(
                "loader.loaded",
                table=table,
                load_id=result.load_id,
                files=result.files,
                rows=result.rows_inserted,
                duplicates=result.duplicates_skipped,
            )
            self.mark_progress()
            self._archive(batch.files)
            return

    def _set_aside(self, error: CorruptFileError, version: str | None) -> None:
        """Move an unreadable file under the failed prefix, with its reason beside it — only the version that
        was read: one rewritten since stays, to be read next cycle."""
        target = f"{self._settings.failed_prefix}/{error.path}"
        try:
            self._lake.move(error.path, target, version=version)
        except LakeVersionChangedError as exc:
            log.warning("loader.file_rewritten", file=error.path, reason=error.reason, error=str(exc))
            return
        except LakeNotFoundError as exc:  # moved or deleted since it was read: nothing left to set aside
            log.warning("loader.file_gone", file=error.path, reason=error.reason, error=str(exc))
            return
        self._lake.write(f"{target}.reason.txt", f"{error.reason}\n".encode())
        log.error("loader.file_failed", file=error.path, moved_to=target, reason=error.reason)

    def _archive(self, files: Iterable[LakeFile]) -> None:
        """Move loaded files under the archive prefix; one that fails now stays and is moved next cycle."""
        if not self._settings.archive_prefix:
            return
        for file in files:
            try:
                self._lake.move(file.path, f"{self._settings.archive_prefix}/{file.path}", version=file.version)
            except LakeNotFoundError:  # archived by an earlier, interrupted attempt
                continue
            except LakeVersionChangedError:  # rewritten since it was listed: the newer file is loaded next cycle
                log.info("loader.archive_skipped", file=file.path, loaded_version=file.version)
            except LakeTransientError as exc:
                log.warning("loader.archive_deferred", file=file.path, error=str(exc))
                return


class _HeldSession:
    """One warehouse session (:meth:`Warehouse.session`) for the tables of a cycle, opened when the first of them
    needs it and renewed once it has been open ``hold_s``."""

    def __init__(self, warehouse: Warehouse, hold_s: float) -> None:
        self._warehouse = warehouse
        self._hold_s = hold_s
        self._open: contextlib.ExitStack | None = None
        self._opened_at = 0.0

    def __enter__(self) -> _HeldSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure(self) -> None:
        """A session open for less than ``hold_s``; raises WarehouseBusyError when the warehouse is held."""
        if self._open is not None and time.monotonic() - self._opened_at < self._hold_s:
            return
        self.close()
        opened = contextlib.ExitStack()
        opened.enter_context(self._warehouse.session())
        self._open, self._opened_at = opened, time.monotonic()

    def close(self) -> None:
        opened, self._open = self._open, None
        if opened is not None:
            opened.close()


def _contract_of(contracts: ContractRegistry, table: str) -> TableContract:
    """The contract of a table of the primary source (``schema.table``) or another (``prefix/schema.table``)."""
    source, _, qualified = table.rpartition("/")
    schema, table_name = qualified.split(".", 1)
    return contracts.get(schema, table_name, source)
