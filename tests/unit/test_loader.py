"""The loader's cycle on a local lake and a DuckDB file: no servers needed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from services.common.contracts import Column, TableContract
from services.common.contracts.store import lake_contract_path, publish_contract, write_contract
from services.common.health import Heartbeat
from services.common.lake import Lake, LakeFile, LakeTransientError, LocalLake
from services.common.metrics import LoaderMetrics
from services.common.settings import LoaderSettings, Settings
from services.common.signals import Shutdown
from services.loader import app as loader_app
from services.loader.app import Loader
from services.loader.wiring import stalled_after_s
from services.warehouse.base import LoadedFile, LoadResult
from services.warehouse.bronze import COORDINATES, BronzeChange, LoadBatch, bronze_schema
from services.warehouse.duckdb import DuckDBWarehouse, duckdb_type
from services.warehouse.errors import WarehouseBusyError
from tests.fixtures.lakefiles import LakeFiles, customer_event, lending_contract, transaction_event


@pytest.fixture
def lake(tmp_path: Path) -> LocalLake:
    return LocalLake(tmp_path / "lake")


def _loader(
    lake: LocalLake,
    tmp_path: Path,
    registry: CollectorRegistry | None = None,
    shutdown: Shutdown | None = None,
    warehouse: DuckDBWarehouse | None = None,
    **settings: object,
) -> Loader:
    return Loader(
        LoaderSettings.model_validate(settings),
        topic_prefix="cdcflow",
        lake=lake,
        warehouse=warehouse or DuckDBWarehouse(tmp_path / "wh.duckdb"),
        metrics=LoaderMetrics(registry or CollectorRegistry()),
        shutdown=shutdown or Shutdown(),
    )


def _bronze(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def test_batches_are_bounded_by_files_and_each_change_lands_once(lake: LocalLake, tmp_path: Path) -> None:
    files = LakeFiles(lake, lending_contract("transactions"))
    for start in range(0, 50, 10):
        files.write(range(start, start + 10), ts_us=1_795_000_000_000_000 + start * 3_600_000_000)  # 5 hours
    report = _loader(lake, tmp_path, max_batch_files=2).cycle()
    assert (report.files, report.rows_inserted, report.duplicates_skipped) == (5, 50, 0)
    assert _bronze(tmp_path, "select count(distinct _load_id) from bronze.lending__transactions") == [(3,)]
    assert _bronze(
        tmp_path, "select count(*), min(_kafka_offset), max(_kafka_offset) from bronze.lending__transactions"
    ) == [(50, 0, 49)]
    again = _loader(lake, tmp_path).cycle()
    assert (again.files, again.rows_inserted) == (0, 0)


def test_overlapping_files_are_deduplicated_on_coordinates(lake: LocalLake, tmp_path: Path) -> None:
    files = LakeFiles(lake, lending_contract("transactions"))
    files.write(range(0, 10))
    assert _loader(lake, tmp_path).cycle().rows_inserted == 10
    files.write(range(5, 20))  # a zombie's overlapping file: 5..9 again, named by its own first offset
    report = _loader(lake, tmp_path).cycle()
    assert (report.rows_inserted, report.duplicates_skipped) == (10, 5)
    assert _bronze(tmp_path, "select count(*), count(distinct _kafka_offset) from bronze.lending__transactions") == [
        (20, 20)
    ]


def test_shards_split_tables_without_overlap(lake: LocalLake, tmp_path: Path) -> None:
    for table in ("transactions", "customers", "facilities"):
        contract = lending_contract(table)
        folder = lake.root / "cdcflow" / contract.qualified_name / "dt=2026-11-22" / "hour=10"
        folder.mkdir(parents=True)
    LakeFiles(lake, lending_contract("transactions")).write(range(3))
    owners = [s for s in ("0/3", "1/3", "2/3") if _loader(lake, tmp_path, shard=s)._mine("lending.transactions")]
    assert len(owners) == 1
    other = next(s for s in ("0/3", "1/3", "2/3") if s != owners[0])
    assert _loader(lake, tmp_path, shard=other).cycle().files == 0
    assert _loader(lake, tmp_path, shard=owners[0]).cycle().files == 1


def test_archive_moves_loaded_files_and_metrics_follow(lake: LocalLake, tmp_path: Path) -> None:
    LakeFiles(lake, lending_contract("transactions")).write(range(7))
    registry = CollectorRegistry()
    loader = _loader(lake, tmp_path, registry, archive_prefix="_archive")
    assert loader.cycle().rows_inserted == 7
    assert [f.path for f in lake.list("cdcflow/")] == []
    assert len(list(lake.list("_archive/cdcflow/lending.transactions/"))) == 1
    labels = {"table": "lending.transactions"}
    assert registry.get_sample_value("cdcflow_loader_rows_loaded_total", labels) == 7
    assert registry.get_sample_value("cdcflow_loader_files_loaded_total", labels) == 1
    assert registry.get_sample_value("cdcflow_loader_pending_files", labels) == 1  # measured before the load
    freshness = registry.get_sample_value("cdcflow_bronze_freshness_seconds", labels)
    assert freshness is not None
    assert freshness > 0


def test_min_interval_between_loads_of_a_table(lake: LocalLake, tmp_path: Path) -> None:
    files = LakeFiles(lake, lending_contract("transactions"))
    files.write(range(3))
    loader = _loader(lake, tmp_path, min_table_interval_s=3600)
    assert loader.cycle().files == 1
    files.write(range(3, 6))
    assert loader.cycle().files == 0  # too soon for this table


@contextlib.contextmanager
def _held_by_another_process(path: Path) -> Iterator[None]:
    """The DuckDB file open (and so locked) in another process until the block ends."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print(flush=True); input()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        holder.stdout.readline()  # the file is open (and locked) now
        yield
    finally:
        holder.communicate(b"\n", timeout=30)


def test_a_warehouse_held_by_another_process_is_waited_for(lake: LocalLake, tmp_path: Path) -> None:
    """A transform run may hold the DuckDB file at start or at a cycle: the loader waits, it does not exit."""
    LakeFiles(lake, lending_contract("transactions")).write(range(10), ts_us=1_795_000_000_000_000)
    with _held_by_another_process(tmp_path / "wh.duckdb"):
        registry = CollectorRegistry()
        assert _loader(lake, tmp_path, registry).run(once=True) == 0
        assert registry.get_sample_value("cdcflow_loader_rows_loaded_total", {"table": "lending.transactions"}) is None
        assert _loader(lake, tmp_path).cycle().busy  # a cycle while it is held: skipped, not fatal
    assert _loader(lake, tmp_path).run(once=True) == 0
    assert _bronze(tmp_path, "select count(*) from bronze.lending__transactions") == [(10,)]


class _StopAfterWaits(Shutdown):
    """Records how long the loader sleeps between cycles; asks it to stop after ``cycles`` of them."""

    def __init__(self, cycles: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self._cycles = cycles

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        if len(self.waits) >= self._cycles:
            self.request("test")
        return self.requested


def test_the_interval_is_a_period_so_a_slow_cycle_shortens_the_pause(lake: LocalLake, tmp_path: Path) -> None:
    files = LakeFiles(lake, lending_contract("transactions"))
    for start in range(0, 200, 20):
        files.write(range(start, start + 20), ts_us=1_795_000_000_000_000 + start * 3_600_000_000)
    shutdown = _StopAfterWaits(cycles=2)
    loader = _loader(lake, tmp_path, shutdown=shutdown, interval_s=30)
    assert loader.run(once=False) == 0
    first, second = shutdown.waits
    assert first < second <= 30  # the first cycle loaded ten files, the second found nothing
    assert _bronze(tmp_path, "select count(*) from bronze.lending__transactions") == [(200,)]


def test_a_batch_the_warehouse_refuses_stops_its_table_and_the_others_load(lake: LocalLake, tmp_path: Path) -> None:
    transactions = lending_contract("transactions")
    LakeFiles(lake, transactions).write(range(0, 5))
    rows = pa.table(
        {
            "customer_id": pa.array([1, 2], pa.int64()),
            "_kafka_topic": ["cdcflow.lending.customers"] * 2,
            "_kafka_partition": pa.array([0, 0], pa.int32()),
            "_kafka_offset": pa.array([0, 1], pa.int64()),
        }
    )
    buffer = pa.BufferOutputStream()
    pq.write_table(rows, buffer)
    lake.write(
        "cdcflow/lending.customers/dt=2026-11-22/hour=10/p0-00000000000000000000.parquet",
        buffer.getvalue().to_pybytes(),
    )
    # bronze altered by hand: a column the loader does not fill, and that refuses NULL
    columns = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in bronze_schema(transactions))
    key = ", ".join(COORDINATES)
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as conn:
        conn.execute(
            "create schema bronze; create table bronze.lending__transactions"
            f" ({columns}, audited int not null, primary key ({key}))"
        )
    registry = CollectorRegistry()

    report = _loader(lake, tmp_path, registry).cycle()

    assert report.stopped_tables == ["lending.transactions"]
    assert report.rows_inserted == 2
    assert _bronze(tmp_path, "select customer_id from bronze.lending__customers order by 1") == [(1,), (2,)]
    assert (
        registry.get_sample_value(
            "cdcflow_loader_failures_total", {"table": "lending.transactions", "kind": "warehouse"}
        )
        == 1
    )


def test_a_broken_contract_file_stops_its_table_and_the_others_load(lake: LocalLake, tmp_path: Path) -> None:
    """A hand-edited or truncated contract file stopped the whole loader, at every restart. Now only the table
    it is named for stops, its files wait (read with the version before, a file would lose the new columns), and
    they load once the file is whole again."""
    contracts = tmp_path / "schemas"
    transactions, customers = lending_contract("transactions"), lending_contract("customers")
    for contract in (transactions, customers):
        write_contract(contracts, contract)
    (contracts / "lending.accounts.avsc").write_text('{"type": "record", "name": "accou')  # no files: stops nothing
    LakeFiles(lake, transactions).write(range(0, 5))
    LakeFiles(lake, customers, event=customer_event).write(range(0, 3))
    version_2 = replace(transactions, version=2)
    lake.write(lake_contract_path(version_2), b'{"type": "record", "fields": 7, "cdcflow.primary_key": []}')
    registry = CollectorRegistry()
    loader = _loader(lake, tmp_path, registry, contracts_dir=contracts)

    report = loader.cycle()

    assert (report.stopped_tables, report.rows_inserted) == (["lending.transactions"], 3)
    assert _bronze(tmp_path, "select count(*) from bronze.lending__customers") == [(3,)]
    labels = {"table": "lending.transactions", "kind": "contract"}
    assert registry.get_sample_value("cdcflow_loader_failures_total", labels) == 1
    assert loader.cycle().stopped_tables == ["lending.transactions"]  # until the file is fixed

    publish_contract(lake, version_2)
    report = loader.cycle()
    assert (report.stopped_tables, report.rows_inserted) == ([], 5)
    assert _bronze(tmp_path, "select count(*) from bronze.lending__transactions") == [(5,)]


def test_a_file_of_an_earlier_version_that_a_type_change_no_longer_fits_stops_its_table(
    lake: LocalLake, tmp_path: Path
) -> None:
    """Text made unconstrained numeric: DuckDB spells both VARCHAR, so bronze saw no change, and a file written
    before it, whose text is no number, was taken for a corrupt file and moved to _failed/ for good. It now
    stays where it is and its table stops, naming the change."""
    transactions = lending_contract("transactions")
    LakeFiles(lake, transactions).write(range(0, 3))
    assert _loader(lake, tmp_path).cycle().rows_inserted == 3
    [waiting] = LakeFiles(lake, transactions).write(range(3, 6))  # "r3".."r5", written under version 1
    numeric = tuple(
        replace(c, semantic="variable_decimal", pg_type="numeric") if c.name == "reference" else c
        for c in transactions.columns
    )
    publish_contract(lake, replace(transactions, version=transactions.version + 1, columns=numeric))
    registry = CollectorRegistry()

    report = _loader(lake, tmp_path, registry).cycle()

    assert (report.stopped_tables, report.failed_files, report.rows_inserted) == (["lending.transactions"], [], 0)
    assert waiting.file.path in {f.path for f in lake.list()}
    assert not [f for f in lake.list() if f.path.startswith("_failed/")]
    labels = {"table": "lending.transactions", "kind": "schema"}
    assert registry.get_sample_value("cdcflow_loader_failures_total", labels) == 1


def test_a_bit_flipped_in_a_data_page_is_refused_by_its_checksum(lake: LocalLake, tmp_path: Path) -> None:
    """A lake file changed at rest must not load as other values: every page carries a CRC."""
    files = LakeFiles(lake, lending_contract("transactions"))
    files.write(range(0, 50))
    (damaged,) = (w.file.path for w in files.write(range(50, 100)))
    path = lake.root / damaged
    data = bytearray(path.read_bytes())
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)  # the first column's pages, intact for now
    data[chunk.data_page_offset + chunk.total_compressed_size - 2] ^= 0x01  # inside the page, not its header
    path.write_bytes(bytes(data))
    assert _loader(lake, tmp_path).run(once=True) == 0
    assert _bronze(tmp_path, "select min(_kafka_offset), max(_kafka_offset) from bronze.lending__transactions") == [
        (0, 49)
    ]
    (reason,) = (lake.root / "_failed").rglob("*.reason.txt")
    assert reason.name == f"{path.name}.reason.txt"
    assert "checksum" in reason.read_text().lower()


class _GoneBeforeTheMove(LocalLake):
    """A file is deleted (by hand, by a retention rule) between the loader's read of it and its move."""

    def move(self, src: str, dst: str, *, version: str | None = None) -> LakeFile:
        (self.root / src).unlink(missing_ok=True)
        return super().move(src, dst, version=version)


def test_an_unreadable_file_gone_before_it_is_set_aside_leaves_the_rest_loading(tmp_path: Path) -> None:
    lake = _GoneBeforeTheMove(tmp_path / "lake")
    files = LakeFiles(lake, lending_contract("transactions"))
    files.write(range(0, 50))
    (damaged,) = (w.file.path for w in files.write(range(50, 100)))
    (lake.root / damaged).write_bytes(b"not a Parquet file")
    assert _loader(lake, tmp_path).run(once=True) == 0
    assert _bronze(tmp_path, "select min(_kafka_offset), max(_kafka_offset) from bronze.lending__transactions") == [
        (0, 49)
    ]
    assert not list(lake.root.rglob("*.reason.txt"))


class _RewrittenBeforeTheMove(LocalLake):
    """A restarted writer re-cuts a batch under the same name between the loader's read and its move."""

    rewrite: Callable[[], object] | None = None

    def move(self, src: str, dst: str, *, version: str | None = None) -> LakeFile:
        if self.rewrite is not None:
            rewrite, self.rewrite = self.rewrite, None
            rewrite()
        return super().move(src, dst, version=version)


def test_the_archive_takes_only_the_version_that_was_loaded(tmp_path: Path) -> None:
    lake = _RewrittenBeforeTheMove(tmp_path / "lake")
    files = LakeFiles(lake, lending_contract("transactions"))
    files.write(range(0, 5))
    (first,) = lake.list()
    # the same records under the same name, written again: a new version of the file
    lake.rewrite = lambda: files.write(range(0, 5))
    assert _loader(lake, tmp_path, archive_prefix="_archive").run(once=True) == 0
    (pending,) = lake.list()
    assert pending.path == first.path
    assert pending.version != first.version  # the version read was archived; the newer one stayed
    assert _loader(lake, tmp_path, archive_prefix="_archive").run(once=True) == 0
    offsets = "select count(*), min(_kafka_offset), max(_kafka_offset) from bronze.lending__transactions"
    assert _bronze(tmp_path, offsets) == [(5, 0, 4)]
    assert [f.path for f in lake.list() if not f.path.startswith("_archive/")] == []


def test_a_zombie_writers_shorter_batch_never_replaces_the_owners_file(tmp_path: Path) -> None:
    """A writer dropped from the group flushes offsets 0-4 after the partition's new owner wrote 0-9."""
    lake = LocalLake(tmp_path / "lake")
    owner = LakeFiles(lake, lending_contract("transactions"))
    zombie = LakeFiles(lake, lending_contract("transactions"))
    (owners,) = owner.write(range(0, 10))
    (zombies,) = zombie.write(range(0, 5))
    assert owners.file.path != zombies.file.path
    assert pq.read_metadata(lake.root / owners.file.path).num_rows == 10
    assert _loader(lake, tmp_path).run(once=True) == 0
    offsets = "select count(*), count(distinct _kafka_offset), min(_kafka_offset), max(_kafka_offset)"
    assert _bronze(tmp_path, f"{offsets} from bronze.lending__transactions") == [(10, 10, 0, 9)]


class _Unreachable(LocalLake):
    """A lake whose calls fail the way a storage outage does once the client's retries ran out."""

    failing_reads: str | None = None  # a table folder whose files cannot be read
    failing_listing = False
    failing_moves = False

    def read(self, path: str) -> bytes:
        if self.failing_reads is not None and f"/{self.failing_reads}/" in path:
            raise LakeTransientError(f"503 reading {path}")
        return super().read(path)

    def list(self, prefix: str = "") -> Iterator[LakeFile]:
        if self.failing_listing:
            raise LakeTransientError("503 listing")
        return super().list(prefix)

    def move(self, src: str, dst: str, *, version: str | None = None) -> LakeFile:
        if self.failing_moves:
            raise LakeTransientError(f"503 moving {src}")
        return super().move(src, dst, version=version)


def test_a_storage_outage_of_one_table_defers_it_and_the_others_load(tmp_path: Path) -> None:
    lake = _Unreachable(tmp_path / "lake")
    LakeFiles(lake, lending_contract("transactions")).write(range(0, 5))
    LakeFiles(lake, lending_contract("customers"), event=customer_event).write(range(0, 3))
    lake.failing_reads = "lending.customers"
    registry = CollectorRegistry()
    loader = _loader(lake, tmp_path, registry)
    report = loader.cycle()
    assert (report.deferred_tables, report.stopped_tables, report.rows_inserted) == (["lending.customers"], [], 5)
    failures = registry.get_sample_value(
        "cdcflow_loader_failures_total", {"table": "lending.customers", "kind": "transient"}
    )
    assert failures == 1
    lake.failing_reads = None
    report = loader.cycle()
    assert (report.deferred_tables, report.rows_inserted) == ([], 3)
    assert _bronze(tmp_path, "select count(*) from bronze.lending__customers") == [(3,)]


def test_a_storage_outage_of_the_listing_waits_for_the_next_cycle(tmp_path: Path) -> None:
    lake = _Unreachable(tmp_path / "lake")
    LakeFiles(lake, lending_contract("transactions")).write(range(0, 5))
    lake.failing_listing = True
    loader = _loader(lake, tmp_path)
    report = loader.cycle()
    assert (report.busy, report.files) == (True, 0)
    lake.failing_listing = False
    assert loader.cycle().rows_inserted == 5


def test_a_failed_archive_is_retried_on_the_next_cycle(tmp_path: Path) -> None:
    lake = _Unreachable(tmp_path / "lake")
    LakeFiles(lake, lending_contract("transactions")).write(range(0, 5))
    lake.failing_moves = True
    loader = _loader(lake, tmp_path, archive_prefix="_archive")
    assert loader.cycle().rows_inserted == 5
    assert [f.path for f in lake.list("_archive/")] == []
    lake.failing_moves = False
    report = loader.cycle()
    assert (report.files, report.rows_inserted) == (0, 0)  # nothing loaded twice
    assert len(list(lake.list("_archive/"))) == 1
    assert [f.path for f in lake.list("cdcflow/")] == []


def test_liveness_follows_progress_not_cycle_ends(tmp_path: Path) -> None:
    """A cycle stuck in one long step is alive while it is within one step's deadline, and only then dead."""
    heartbeat = Heartbeat()
    alive = heartbeat.alive_within(0.2)
    assert alive()
    time.sleep(0.25)
    assert not alive()
    heartbeat.beat()
    assert alive()
    bigquery_on_gcs = Settings.model_validate(
        {
            "warehouse": {"backend": "bigquery", "bigquery_job_timeout_s": 600, "bigquery_retry_deadline_s": 120},
            "lake": {"backend": "gcs", "root": "gs://lake-bucket", "gcs_retry_deadline_s": 120},
            "loader": {"interval_s": 10},
        }
    )
    assert stalled_after_s(bigquery_on_gcs) == 60 + 600 + 120 + 120
    assert stalled_after_s(Settings.model_validate({"loader": {"interval_s": 100}})) == 300


def test_every_sources_prefix_is_loaded_into_its_own_bronze_table(lake: LocalLake, tmp_path: Path) -> None:
    """Two sources both capture lending.transactions: one bronze table each, neither sees the other's rows."""
    primary = lending_contract("transactions")
    shop = replace(primary, source="shop")
    publish_contract(lake, shop)
    LakeFiles(lake, primary).write(range(10))
    LakeFiles(lake, shop, prefix="shop").write(range(4))
    assert _loader(lake, tmp_path).cycle().rows_inserted == 10  # the stack's prefix alone: shop's files wait
    registry = CollectorRegistry()
    loader = Loader(
        LoaderSettings(),
        topic_prefix="cdcflow",
        other_prefixes=["shop", "cdcflow"],
        lake=lake,
        warehouse=DuckDBWarehouse(tmp_path / "wh.duckdb"),
        metrics=LoaderMetrics(registry),
        shutdown=Shutdown(),
    )
    report = loader.cycle()
    assert (report.files, report.rows_inserted) == (1, 4)
    assert _bronze(tmp_path, "select count(*) from bronze.lending__transactions") == [(10,)]
    assert _bronze(
        tmp_path, "select count(*), min(_kafka_topic), max(_kafka_topic) from bronze.shop__lending__transactions"
    ) == [(4, "shop.lending.transactions", "shop.lending.transactions")]
    labels = {"table": "shop/lending.transactions"}
    assert registry.get_sample_value("cdcflow_loader_rows_loaded_total", labels) == 4


def test_two_loader_processes_never_share_a_staging_table() -> None:
    """A rolling update's old and new loader may stage the same batch: each gets a table of its own, and a
    retry within one process replaces its own."""
    code = "from services.warehouse.bronze import staging_name; print(staging_name('lending__transactions', 'abc'))"
    names = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    ]
    assert names[0] != names[1]
    assert all(n.startswith("lending__transactions__abc__") for n in names)
    from services.warehouse.bronze import staging_name

    assert staging_name("t", "id") == staging_name("t", "id")


class _CrashError(Exception):
    pass


def test_before_commit_runs_once_per_batch_after_staging_and_before_the_commit(lake: LocalLake, tmp_path: Path) -> None:
    LakeFiles(lake, lending_contract("transactions")).write(range(10))
    calls: list[None] = []

    def crash() -> None:
        calls.append(None)
        raise _CrashError  # a process killed here commits nothing

    warehouse = DuckDBWarehouse(tmp_path / "wh.duckdb")
    loader = Loader(
        LoaderSettings(),
        topic_prefix="cdcflow",
        lake=lake,
        warehouse=warehouse,
        metrics=LoaderMetrics(CollectorRegistry()),
        shutdown=Shutdown(),
        before_commit=crash,
    )
    with pytest.raises(_CrashError):
        loader.cycle()
    warehouse.close()
    assert len(calls) == 1
    assert _bronze(tmp_path, "select count(*) from information_schema.tables where table_schema = 'staging'") == [(1,)]
    assert _bronze(tmp_path, "select count(*) from bronze._cdcflow_load_manifest") == [(0,)]
    assert _loader(lake, tmp_path).cycle().rows_inserted == 10  # the next run cleans up and loads it


def test_the_transform_beside_the_loader_hears_of_tables_that_gained_rows(lake: LocalLake, tmp_path: Path) -> None:
    heard: list[str] = []
    files = LakeFiles(lake, lending_contract("transactions"))
    files.write(range(0, 10))
    loader = Loader(
        LoaderSettings(),
        topic_prefix="cdcflow",
        lake=lake,
        warehouse=DuckDBWarehouse(tmp_path / "wh.duckdb"),
        metrics=LoaderMetrics(CollectorRegistry()),
        shutdown=Shutdown(),
        on_loaded=heard.append,
    )
    assert loader.cycle().rows_inserted == 10
    assert heard == ["lending.transactions"]
    files.write(range(5, 10))  # only rows bronze holds: silver has nothing new to build
    report = loader.cycle()
    assert (report.files, report.rows_inserted) == (1, 0)
    assert heard == ["lending.transactions"]


class _CountingWarehouse(DuckDBWarehouse):
    """Counts the manifest lookups, by table."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lookups: list[str] = []

    def loaded_files(self, contract: TableContract, paths: Collection[str] | None = None) -> set[LoadedFile]:
        self.lookups.append(contract.full_name)
        return super().loaded_files(contract, paths)


def test_a_cycle_looks_up_only_the_tables_with_new_files(lake: LocalLake, tmp_path: Path) -> None:
    contracts = [replace(lending_contract("transactions"), table=f"clone_{i}") for i in range(4)]
    for contract in contracts:
        write_contract(tmp_path / "contracts", contract)
        LakeFiles(lake, contract).write(range(0, 10))
    warehouse = _CountingWarehouse(tmp_path / "wh.duckdb")
    loader = _loader(lake, tmp_path, warehouse=warehouse, contracts_dir=tmp_path / "contracts")
    assert loader.cycle().files == 4
    warehouse.lookups.clear()
    assert loader.cycle().files == 0  # nothing new: no table's manifest is read
    assert warehouse.lookups == []
    LakeFiles(lake, contracts[2]).write(range(10, 15))
    report = loader.cycle()
    assert (report.files, report.rows_inserted) == (1, 5)
    assert warehouse.lookups == ["lending.clone_2"]
    warehouse.lookups.clear()
    LakeFiles(lake, contracts[1]).write(range(5, 15))  # overlaps what bronze holds: looked up, loaded once
    report = _loader(lake, tmp_path, contracts_dir=tmp_path / "contracts").cycle()  # a new process asks again
    assert (report.files, report.rows_inserted, report.duplicates_skipped) == (1, 5, 5)
    assert loader.cycle().files == 0  # the other loader loaded it: the manifest says so
    assert warehouse.lookups == ["lending.clone_1"]


class _SessionWarehouse(DuckDBWarehouse):
    """Records which calls ran inside a session, and how many sessions there were."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.sessions = 0
        self.inside = False
        self.calls: list[tuple[str, bool]] = []

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        with super().session():
            self.sessions += 1
            self.inside = True
            try:
                yield
            finally:
                self.inside = False

    def loaded_files(self, contract: TableContract, paths: Collection[str] | None = None) -> set[LoadedFile]:
        self.calls.append(("loaded_files", self.inside))
        return super().loaded_files(contract, paths)

    def ensure_bronze(self, contract: TableContract) -> BronzeChange:
        self.calls.append(("ensure_bronze", self.inside))
        return super().ensure_bronze(contract)

    def load(self, batch: LoadBatch, lake: Lake, *, before_commit: Callable[[], None] | None = None) -> LoadResult:
        self.calls.append(("load", self.inside))
        return super().load(batch, lake, before_commit=before_commit)

    def max_source_ts(self, contract: TableContract) -> datetime | None:
        self.calls.append(("max_source_ts", self.inside))
        return super().max_source_ts(contract)


def test_a_tables_lookup_and_load_open_the_warehouse_once(lake: LocalLake, tmp_path: Path) -> None:
    files = LakeFiles(lake, lending_contract("transactions"))
    for start in range(0, 30, 10):
        files.write(range(start, start + 10))
    LakeFiles(lake, lending_contract("transactions"), partition=1).write(range(0, 10))
    warehouse = _SessionWarehouse(tmp_path / "wh.duckdb")
    loader = _loader(lake, tmp_path, warehouse=warehouse, max_batch_files=2)
    assert loader.cycle().rows_inserted == 40
    assert warehouse.sessions == 1
    assert warehouse.calls == [
        ("loaded_files", True),
        ("ensure_bronze", True),
        ("load", True),
        ("load", True),
        ("max_source_ts", True),
    ]
    assert loader.cycle().files == 0
    assert warehouse.sessions == 1  # nothing new: the warehouse is not opened at all
    files.write(range(30, 40))
    warehouse.calls.clear()
    assert loader.cycle().rows_inserted == 10
    assert warehouse.sessions == 2
    assert {inside for _, inside in warehouse.calls} == {True}
    # a new process knows no file: one open per table finds the manifest holds them all and loads nothing
    again = _SessionWarehouse(tmp_path / "wh.duckdb")
    report = _loader(lake, tmp_path, warehouse=again, max_batch_files=2).cycle()
    assert (report.files, again.sessions, again.calls) == (0, 1, [("loaded_files", True)])


def test_the_tables_of_a_cycle_share_a_session_renewed_once_held_long_enough(
    lake: LocalLake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contracts = [replace(lending_contract("transactions"), table=f"clone_{i}") for i in range(3)]
    for contract in contracts:
        write_contract(tmp_path / "contracts", contract)
        LakeFiles(lake, contract).write(range(0, 10))
    warehouse = _SessionWarehouse(tmp_path / "wh.duckdb")
    loader = _loader(lake, tmp_path, warehouse=warehouse, contracts_dir=tmp_path / "contracts")
    assert loader.cycle().rows_inserted == 30
    assert warehouse.sessions == 1
    assert [call for call, _ in warehouse.calls].count("load") == 3
    assert {inside for _, inside in warehouse.calls} == {True}
    assert _bronze(tmp_path, "select count(*) from bronze.lending__clone_2") == [(10,)]  # released at the end
    monkeypatch.setattr(loader_app, "SESSION_HOLD_S", 0.0)
    for contract in contracts:
        LakeFiles(lake, contract).write(range(10, 20))
    assert loader.cycle().rows_inserted == 30
    assert warehouse.sessions == 4  # held no time at all: each table opened the warehouse again


def test_a_session_on_a_file_another_process_holds_is_busy(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "wh.duckdb")
    with _held_by_another_process(tmp_path / "wh.duckdb"):
        with pytest.raises(WarehouseBusyError) as raised, warehouse.session():
            pass
        assert raised.value.whole_warehouse
    with warehouse.session():  # released: the next session opens it
        assert warehouse.max_source_ts(lending_contract("transactions")) is None


def _with_note(offset: int, ts_us: int) -> bytes:
    """A transaction_event of a contract version that added the column ``note``."""
    event = json.loads(transaction_event(offset, ts_us=ts_us))
    event["after"]["note"] = f"n{offset}"
    return json.dumps(event).encode()


class _NewVersionDuringTheListing(LocalLake):
    """A writer that publishes a contract version and writes its first file under it while the loader lists."""

    def __init__(self, root: Path, evolved: TableContract) -> None:
        super().__init__(root)
        self.evolved: TableContract | None = evolved

    def list(self, prefix: str = "") -> Iterator[LakeFile]:
        if self.evolved is not None and prefix == "cdcflow/":
            evolved, self.evolved = self.evolved, None
            publish_contract(self, evolved)
            LakeFiles(self, evolved, event=_with_note).write(range(3))
        return super().list(prefix)


def test_a_file_of_a_version_published_during_the_listing_keeps_its_new_column(tmp_path: Path) -> None:
    """The loader reads contracts after it lists the lake: a file it lists was written under a version it
    knows, so the column that version added reaches bronze instead of being dropped for good."""
    contract = lending_contract("transactions")
    evolved = replace(
        contract, version=contract.version + 1, columns=(*contract.columns, Column("note", "string", "text"))
    )
    lake = _NewVersionDuringTheListing(tmp_path / "lake", evolved)
    report = _loader(lake, tmp_path).cycle()
    assert (report.files, report.rows_inserted, report.failed_files) == (1, 3, [])
    assert _bronze(tmp_path, "select note from bronze.lending__transactions order by _kafka_offset") == [
        ("n0",),
        ("n1",),
        ("n2",),
    ]


def test_a_column_renamed_only_in_case_stops_its_table_and_the_others_load(lake: LocalLake, tmp_path: Path) -> None:
    """``reference`` renamed ``Reference``: the contract keeps the old name beside the new, which no
    warehouse can hold as two columns. That table stops with the reason; the loader and the other tables go on."""
    contract = lending_contract("transactions")
    LakeFiles(lake, contract).write(range(2))
    assert _loader(lake, tmp_path).cycle().rows_inserted == 2
    renamed = replace(
        contract, version=contract.version + 1, columns=(*contract.columns, Column("Reference", "string", "text"))
    )
    publish_contract(lake, renamed)
    LakeFiles(lake, renamed).write(range(2, 4))
    LakeFiles(lake, lending_contract("customers"), event=customer_event).write(range(3))
    registry = CollectorRegistry()
    report = _loader(lake, tmp_path, registry).cycle()
    assert (report.stopped_tables, report.rows_inserted) == (["lending.transactions"], 3)
    labels = {"table": "lending.transactions", "kind": "schema"}
    assert registry.get_sample_value("cdcflow_loader_failures_total", labels) == 1
    assert _bronze(tmp_path, "select count(*) from bronze.lending__transactions") == [(2,)]


def test_a_file_of_a_version_the_loader_does_not_know_waits_for_it(lake: LocalLake, tmp_path: Path) -> None:
    """A rollout that reached the writer first: its files carry a contract version only its own schemas/
    holds. Their table waits (nothing set aside, nothing loaded without the new column) and loads once the
    version is known; the other tables load meanwhile."""
    contract = lending_contract("transactions")
    evolved = replace(
        contract, version=contract.version + 1, columns=(*contract.columns, Column("note", "string", "text"))
    )
    LakeFiles(lake, evolved, event=_with_note).write(range(3))
    LakeFiles(lake, lending_contract("customers"), event=customer_event).write(range(2))
    waiting = _loader(lake, tmp_path).cycle()
    assert (waiting.deferred_tables, waiting.failed_files, waiting.rows_inserted) == (["lending.transactions"], [], 2)
    publish_contract(lake, evolved)
    assert _loader(lake, tmp_path).cycle().rows_inserted == 3
    assert _bronze(tmp_path, "select count(*), count(note) from bronze.lending__transactions") == [(3, 3)]
