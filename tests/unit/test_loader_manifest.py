"""The loader asks the load manifest only about the files it listed: with archiving on, a cycle's cost
follows the files still in place, not every file ever loaded."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.common.contracts import TableContract
from services.common.lake import LocalLake
from services.common.metrics import LoaderMetrics
from services.common.settings import LoaderSettings
from services.common.signals import Shutdown
from services.loader.app import Loader
from services.warehouse.base import LoadedFile
from services.warehouse.bronze import LoadBatch
from services.warehouse.duckdb import DuckDBWarehouse
from tests.fixtures.lakefiles import LakeFiles, lending_contract

HOUR_US = 3_600_000_000


class _CountingWarehouse(DuckDBWarehouse):
    """DuckDB bronze that remembers how many manifest rows each ``loaded_files`` call returned."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rows_returned: list[int] = []

    def loaded_files(self, contract: TableContract, paths: Collection[str] | None = None) -> set[LoadedFile]:
        found = super().loaded_files(contract) if paths is None else super().loaded_files(contract, paths)
        self.rows_returned.append(len(found))
        return found


def _loader(lake: LocalLake, warehouse: DuckDBWarehouse, **settings: object) -> Loader:
    return Loader(
        LoaderSettings.model_validate(settings),
        topic_prefix="cdcflow",
        lake=lake,
        warehouse=warehouse,
        metrics=LoaderMetrics(CollectorRegistry()),
        shutdown=Shutdown(),
    )


def test_with_archiving_a_cycle_reads_only_the_manifest_rows_of_listed_files(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    warehouse = _CountingWarehouse(tmp_path / "wh.duckdb")
    loader = _loader(lake, warehouse, archive_prefix="_archive")
    files = LakeFiles(lake, lending_contract("transactions"))
    for hour in range(20):  # twenty files loaded and archived, one per cycle
        files.write(range(hour * 5, hour * 5 + 5), ts_us=1_795_000_000_000_000 + hour * HOUR_US)
        assert loader.cycle().files == 1
    assert len(list(lake.list("_archive/"))) == 20
    files.write(range(100, 105), ts_us=1_795_000_000_000_000 + 20 * HOUR_US)
    warehouse.rows_returned.clear()
    report = loader.cycle()
    assert (report.files, report.rows_inserted) == (1, 5)
    assert warehouse.rows_returned == [0]  # not the twenty rows of the files already loaded


def test_loaded_files_of_listed_paths_returns_every_version_of_those_and_nothing_else(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    warehouse = DuckDBWarehouse(tmp_path / "wh.duckdb")
    contract = lending_contract("transactions")
    files = LakeFiles(lake, contract)
    warehouse.ensure_bronze(contract)
    a = files.write(range(0, 5))[0].file
    b = files.write(range(5, 10), ts_us=1_795_000_000_000_000 + HOUR_US)[0].file
    warehouse.load(LoadBatch(contract, (a, b)), lake)
    a2 = files.write(range(0, 5))[0].file  # the same name rewritten: a second version
    warehouse.load(LoadBatch(contract, (a2,)), lake)
    both = {LoadedFile(a.path, a.version), LoadedFile(a2.path, a2.version)}
    assert a2.version != a.version
    assert warehouse.loaded_files(contract, [a.path, "cdcflow/lending.transactions/never-loaded.parquet"]) == both
    assert warehouse.loaded_files(contract, []) == set()
    assert warehouse.loaded_files(contract) == {*both, LoadedFile(b.path, b.version)}
    assert warehouse.loaded_files(lending_contract("customers"), [a.path]) == set()  # another table's manifest rows
