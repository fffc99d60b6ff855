"""A storage outage under the loader: the GCS emulator answers 503 to everything for a while.

The loader runs as users run it (``cdcflow load --every``) against a real GCS emulator behind a proxy that
refuses every request during the outage. The storage client retries until its deadline and raises; the
loader must log, wait for its next cycle and, once storage answers again, load everything — never exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from services.common.lake.gcs import GcsLake
from tests.fixtures.flaky_http import flaky_proxy
from tests.fixtures.gcs import EmulatorBucket, gcs_bucket, gcs_emulator  # noqa: F401
from tests.fixtures.lakefiles import LakeFiles, lending_contract

pytestmark = pytest.mark.timeout(180)

_CDCFLOW = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cdcflow"


def _bronze_rows(path: Path) -> int | None:
    """Rows in bronze, or None while the loader holds the file or has not created the table yet."""
    with contextlib.suppress(duckdb.Error), duckdb.connect(str(path), read_only=True) as conn:
        row = conn.execute("select count(*) from bronze.lending__transactions").fetchone()
        return int(row[0]) if row else 0
    return None


def _wait_for_rows(path: Path, rows: int, loader: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert loader.poll() is None, f"the loader exited with {loader.returncode}"
        if _bronze_rows(path) == rows:
            return
        time.sleep(0.5)
    raise AssertionError(f"bronze did not reach {rows} rows within {timeout_s}s (has {_bronze_rows(path)})")


def test_the_loader_rides_out_a_storage_outage(gcs_bucket: EmulatorBucket, tmp_path: Path) -> None:  # noqa: F811
    files = LakeFiles(GcsLake(gcs_bucket.name, "", gcs_bucket.client), lending_contract("transactions"))
    files.write(range(0, 5))
    warehouse = tmp_path / "warehouse.duckdb"
    with flaky_proxy(gcs_bucket.endpoint) as proxy:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CDCFLOW_")},
            "CDCFLOW_LAKE__BACKEND": "gcs",
            "CDCFLOW_LAKE__ROOT": f"gs://{gcs_bucket.name}",
            "CDCFLOW_LAKE__GCS_ENDPOINT": proxy.endpoint,
            "CDCFLOW_LAKE__GCS_RETRY_DEADLINE_S": "1",
            "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(warehouse),
            "CDCFLOW_LOADER__HEALTH_PORT": "0",
        }
        log = (tmp_path / "loader.log").open("wb")
        loader = subprocess.Popen(
            [str(_CDCFLOW), "load", "--every", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
        )
        try:
            _wait_for_rows(warehouse, 5, loader, timeout_s=60)
            proxy.failing = True
            files.write(range(5, 12))  # written straight to the emulator: only the loader's calls fail
            refused_before = proxy.refused
            time.sleep(8)  # several cycles, each running into the client's retry deadline
            assert loader.poll() is None, f"the loader exited with {loader.returncode} during the outage"
            assert proxy.refused > refused_before + 3
            assert _bronze_rows(warehouse) == 5
            proxy.failing = False
            _wait_for_rows(warehouse, 12, loader, timeout_s=60)
        finally:
            loader.send_signal(signal.SIGTERM)
            try:
                code = loader.wait(timeout=30)
            except subprocess.TimeoutExpired:
                loader.kill()
                raise
            log.close()
    output = (tmp_path / "loader.log").read_text(errors="replace")
    assert code == 0, output[-3000:]
    deferrals = ("loader.lease_unknown", "loader.cycle_deferred", "loader.table_deferred")
    assert any(event in output for event in deferrals), output[-3000:]
