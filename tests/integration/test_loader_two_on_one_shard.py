"""Two loaders of one shard, as a rolling update runs them: the second waits, then takes over at once.

Both run as users run them (``cdcflow load --every``) on one lake and one warehouse. While the first holds
the shard's lease the second loads nothing; when the first stops cleanly the second loads what came since,
and bronze holds every change exactly once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

import duckdb
import pytest

from services.common.lake import LocalLake
from tests.fixtures.lakefiles import LakeFiles, lending_contract

pytestmark = pytest.mark.timeout(180)

_CDCFLOW = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cdcflow"


def _bronze(path: Path) -> tuple[int, int] | None:
    """(rows, distinct coordinates) in bronze; None while a loader holds the file or before the table exists."""
    with contextlib.suppress(duckdb.Error), duckdb.connect(str(path), read_only=True) as conn:
        row = conn.execute(
            "select count(*), count(distinct (_kafka_topic, _kafka_partition, _kafka_offset))"
            " from bronze.lending__transactions"
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None
    return None


def _wait(what: str, check: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")  # the logs are printed by the test's finally


def test_the_second_loader_of_a_shard_waits_then_takes_over(tmp_path: Path) -> None:
    lake_root, warehouse = tmp_path / "lake", tmp_path / "warehouse.duckdb"
    files = LakeFiles(LocalLake(lake_root), lending_contract("transactions"))
    files.write(range(0, 10))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CDCFLOW_")},
        "CDCFLOW_LAKE__ROOT": str(lake_root),
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(warehouse),
        "CDCFLOW_LOADER__HEALTH_PORT": "0",
    }
    logs: list[IO[bytes]] = []
    loaders: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        logs.append(log)
        process = subprocess.Popen([str(_CDCFLOW), "load", "--every", "0.5"], env=env, stdout=log, stderr=log)
        loaders.append(process)
        return process

    try:
        first = start("first")
        _wait("the first loader's load", lambda: _bronze(warehouse) == (10, 10))
        second = start("second")
        _wait("the second loader to see the lease", lambda: "lease_held_elsewhere" in _log(tmp_path, "second"))

        files.write(range(10, 20))
        _wait("the first loader's second load", lambda: _bronze(warehouse) == (20, 20))
        assert "loader.loaded" not in _log(tmp_path, "second")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        assert "loader.lease_released" in _log(tmp_path, "first")
        files.write(range(20, 30))
        _wait("the second loader to take over", lambda: _bronze(warehouse) == (30, 30), timeout_s=30)
        assert "loader.lease_taken" in _log(tmp_path, "second")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        for process in loaders:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
        for name in ("first", "second"):
            if (tmp_path / f"{name}.log").exists():
                print(f"--- {name} ---\n{_log(tmp_path, name)[-2000:]}")


def _log(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text(errors="replace")
