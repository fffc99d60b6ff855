"""One loader per shard: the lease in the lake, and a loader that waits while another holds it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from prometheus_client import CollectorRegistry

from services.common.lake import Lake, LocalLake
from services.common.metrics import LoaderMetrics
from services.common.settings import LoaderSettings
from services.common.signals import Shutdown
from services.loader.app import Loader
from services.loader.lease import LeaseHolder, ShardLease, lease_path
from services.warehouse import LoadResult
from services.warehouse.bronze import LoadBatch
from services.warehouse.duckdb import DuckDBWarehouse
from tests.fixtures.lakefiles import LakeFiles, lending_contract

SHARD = (0, 1)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _holder(name: str, *, host: str = "elsewhere", pid: int = 1) -> LeaseHolder:
    return LeaseHolder(host, pid, name)


def test_a_second_loader_waits_until_the_lease_expires(tmp_path: Path) -> None:
    lake, clock = LocalLake(tmp_path), _Clock()
    first = ShardLease(lake, SHARD, 60, holder=_holder("a"), clock=clock)
    second = ShardLease(lake, SHARD, 60, holder=_holder("b"), clock=clock)
    assert first.hold()
    assert not second.hold()
    clock.now += 59
    assert first.hold()  # renewed: another 60 s from now
    clock.now += 59
    assert not second.hold()
    clock.now += 2  # the first stopped renewing 61 s ago
    assert second.hold()
    assert not first.hold()  # and the first knows it lost it
    record = json.loads((tmp_path / lease_path(SHARD)).read_bytes())
    assert (record["token"], record["expires_at"]) == ("b", clock.now + 60)


def test_a_released_lease_is_taken_at_once(tmp_path: Path) -> None:
    lake, clock = LocalLake(tmp_path), _Clock()
    first = ShardLease(lake, SHARD, 600, holder=_holder("a"), clock=clock)
    second = ShardLease(lake, SHARD, 600, holder=_holder("b"), clock=clock)
    assert first.hold()
    first.release()
    assert second.hold()
    first.release()  # no longer held: nothing to give up, the second keeps it
    assert not ShardLease(lake, SHARD, 600, holder=_holder("c"), clock=clock).hold()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    lake, clock = LocalLake(tmp_path), _Clock()
    here = socket.gethostname()
    assert ShardLease(lake, SHARD, 600, holder=_holder("a", host=here, pid=int(dead.stdout)), clock=clock).hold()
    assert ShardLease(lake, SHARD, 600, holder=_holder("b", host=here, pid=os.getpid()), clock=clock).hold()
    # a live process of this host keeps it
    assert not ShardLease(lake, SHARD, 600, holder=_holder("c"), clock=clock).hold()


def test_shards_have_leases_of_their_own(tmp_path: Path) -> None:
    lake, clock = LocalLake(tmp_path), _Clock()
    assert ShardLease(lake, (0, 2), 60, holder=_holder("a"), clock=clock).hold()
    assert ShardLease(lake, (1, 2), 60, holder=_holder("b"), clock=clock).hold()
    assert lease_path((0, 2)) != lease_path((1, 2))


def test_two_readers_of_one_state_cannot_both_take_it(tmp_path: Path) -> None:
    """The write is conditional on the version read: of two writes on one version, one is refused."""
    lake = LocalLake(tmp_path)
    path = lease_path(SHARD)
    lake.write_if(path, b"{}", version=None)
    (listed,) = lake.list(path)
    lake.write_if(path, b'{"a": 1}', version=listed.version)
    with pytest.raises(Exception, match="version"):
        lake.write_if(path, b'{"b": 1}', version=listed.version)
    with pytest.raises(Exception, match="version"):
        lake.write_if(path, b'{"c": 1}', version=None)


def _loader(lake: LocalLake, tmp_path: Path, lease: ShardLease) -> Loader:
    return Loader(
        LoaderSettings(),
        topic_prefix="cdcflow",
        lake=lake,
        warehouse=DuckDBWarehouse(tmp_path / "wh.duckdb"),
        metrics=LoaderMetrics(CollectorRegistry()),
        shutdown=Shutdown(),
        lease=lease,
    )


def test_a_loader_without_the_lease_loads_nothing_until_it_is_released(tmp_path: Path) -> None:
    lake, clock = LocalLake(tmp_path / "lake"), _Clock()
    LakeFiles(lake, lending_contract("transactions")).write(range(0, 5))
    holding = ShardLease(lake, SHARD, 600, holder=_holder("old pod"), clock=clock)
    assert holding.hold()
    waiting = _loader(lake, tmp_path, ShardLease(lake, SHARD, 600, holder=_holder("new pod"), clock=clock))
    report = waiting.cycle()
    assert (report.standby, report.files) == (True, 0)
    holding.release()  # the old pod's clean shutdown
    report = waiting.cycle()
    assert (report.standby, report.rows_inserted) == (False, 5)
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from bronze.lending__transactions").fetchall() == [(5,)]


class _SlowStaging(DuckDBWarehouse):
    """A warehouse whose staging of a batch lasts long enough for ``meanwhile`` to happen before the commit."""

    def __init__(self, path: Path, meanwhile: Callable[[], None]) -> None:
        super().__init__(path)
        self._meanwhile = meanwhile

    def load(self, batch: LoadBatch, lake: Lake, *, before_commit: Callable[[], None] | None = None) -> LoadResult:
        def staged() -> None:
            self._meanwhile()
            if before_commit is not None:
                before_commit()

        return super().load(batch, lake, before_commit=staged)


def test_a_batch_that_outlasts_the_lease_is_not_committed_once_another_loader_took_it(tmp_path: Path) -> None:
    lake, clock = LocalLake(tmp_path / "lake"), _Clock()
    LakeFiles(lake, lending_contract("transactions")).write(range(0, 5))
    successor = ShardLease(lake, SHARD, 600, holder=_holder("new pod"), clock=clock)

    def outlast_the_lease() -> None:
        clock.now += 601  # the slow load jobs of the batch, while its lease expired
        assert successor.hold()

    slow = Loader(
        LoaderSettings(),
        topic_prefix="cdcflow",
        lake=lake,
        warehouse=_SlowStaging(tmp_path / "wh.duckdb", outlast_the_lease),
        metrics=LoaderMetrics(CollectorRegistry()),
        shutdown=Shutdown(),
        lease=ShardLease(lake, SHARD, 600, holder=_holder("old pod"), clock=clock),
    )
    report = slow.cycle()
    assert (report.standby, report.rows_inserted) == (True, 0)
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from bronze.lending__transactions").fetchall() == [(0,)]
        assert conn.execute("select count(*) from bronze._cdcflow_load_manifest").fetchall() == [(0,)]
    report = _loader(lake, tmp_path, successor).cycle()  # the successor loads the batch, once
    assert (report.standby, report.rows_inserted) == (False, 5)
