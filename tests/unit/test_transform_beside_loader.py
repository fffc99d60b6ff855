"""The transform beside the loader, in one process, on a local lake and a DuckDB file (no servers): loads and
dbt share the file instead of taking turns at its lock, and silver follows the tables that were loaded."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import duckdb
from structlog.testing import capture_logs

from services.common.contracts import load_contracts
from services.common.lake import LocalLake
from services.common.settings import Settings, load_settings, repo_root
from services.common.signals import Shutdown
from services.loader.wiring import run_loader
from services.transform.app import full_run_parts
from services.transform.dbt import project_fingerprint
from services.transform.project import materialize
from services.transform.wiring import dbt_for
from tests.fixtures.lakefiles import LakeFiles, lending_contract
from tests.fixtures.net import free_port


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "CDCFLOW_TRANSFORM__WORK_DIR": str(tmp_path / "transform"),
        "CDCFLOW_LAKE__ROOT": str(tmp_path / "lake"),
        "CDCFLOW_SECRETS_DIR": str(tmp_path / "no-secrets"),
        "CDCFLOW_LOADER__HEALTH_PORT": "0",
        "CDCFLOW_LOADER__INTERVAL_S": "0.3",
        "CDCFLOW_LOADER__WITH_TRANSFORM": "true",
        "CDCFLOW_TRANSFORM__INTERVAL_S": "3600",  # one full run, at the start; silver steps after that
        "CDCFLOW_TRANSFORM__SELECT": "silver",  # the full run: silver and its tests, to keep the test short
        "CDCFLOW_TRANSFORM__EXCLUDE": "test_type:unit test_type:singular",
    }


def _count(path: Path, sql: str) -> int:
    conn = duckdb.connect(str(path))  # the process's instance, shared with the loader and dbt
    try:
        row = conn.execute(sql).fetchone()
    except duckdb.CatalogException:  # silver not built yet
        return -1
    finally:
        conn.close()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def _loader_running(settings: Settings) -> Iterator[tuple[list[MutableMapping[str, Any]], threading.Thread, list[int]]]:
    """The loader, with the transform beside it, in a thread for the block: the logs, the thread, and its exit
    code once the block has stopped it."""
    shutdown = Shutdown()
    codes: list[int] = []
    loader = threading.Thread(target=lambda: codes.append(run_loader(settings, shutdown, once=False)))
    with capture_logs() as logs:
        loader.start()
        try:
            yield logs, loader, codes
        finally:
            shutdown.request("test")
            loader.join(timeout=120)


def _wait_for_event(logs: list[MutableMapping[str, Any]], event: str, loader: threading.Thread) -> None:
    """Until ``event`` is logged; fails at once when the loader's thread ended."""
    deadline = time.monotonic() + 120
    while not [e for e in logs if e["event"] == event]:
        assert loader.is_alive(), f"the loader stopped: {[e for e in logs if e['log_level'] == 'error']}"
        assert time.monotonic() < deadline, f"no {event}"
        time.sleep(0.2)


def test_loads_and_silver_steps_share_the_file_in_one_process(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path) | {"CDCFLOW_LOADER__HEALTH_PORT": str(port)}
    settings = load_settings(env)
    warehouse = tmp_path / "warehouse.duckdb"
    files = LakeFiles(LocalLake(tmp_path / "lake"), lending_contract("transactions"))
    with _loader_running(settings) as (logs, loader, codes):
        files.write(range(0, 10))  # loaded while the first full run builds
        _wait_for_event(logs, "transform.run", loader)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as served:
            assert "cdcflow_loader_" in served.read().decode()  # the loader's endpoint serves beside it
        for start in range(10, 60, 10):  # after it: only silver steps can bring these to silver
            files.write(range(start, start + 10))
            time.sleep(0.5)
        deadline = time.monotonic() + 90
        while _count(warehouse, "select count(*) from silver.transactions") != 60:
            assert time.monotonic() < deadline, "silver did not follow bronze"
            assert loader.is_alive(), "the loader stopped"
            time.sleep(0.2)
    assert codes == [0]
    assert not [e for e in logs if e["event"] == "loader.warehouse_busy"]
    assert not [e for e in logs if e["event"] == "loader.table_deferred"]
    steps = [e for e in logs if e["event"] == "transform.silver_step"]
    assert steps
    assert {s["status"] for s in steps} == {"success"}
    assert all(s["tables"] == ["lending.transactions"] for s in steps)  # only the table that was loaded
    assert [e["status"] for e in logs if e["event"] == "transform.run"] == ["success"]
    assert _count(warehouse, "select count(*) from bronze.lending__transactions") == 60


def test_a_loader_that_stops_on_an_error_stops_the_transform_beside_it(tmp_path: Path) -> None:
    """An error the loader does not expect ends its loop; the process must end with it (and be restarted), not
    wait for ever on a transform thread nobody asked to stop."""
    settings = load_settings(_env(tmp_path))
    files = LakeFiles(LocalLake(tmp_path / "lake"), lending_contract("transactions"))
    files.write(range(0, 10))
    shutdown = Shutdown()
    errors: list[BaseException] = []
    broken = threading.Event()

    def before_commit() -> None:
        if broken.is_set():
            raise RuntimeError("a defect in the loader")

    def run() -> None:
        try:
            run_loader(settings, shutdown, once=False, before_commit=before_commit)
        except BaseException as exc:
            errors.append(exc)

    loader = threading.Thread(target=run, daemon=True)
    with capture_logs() as logs:
        loader.start()
        deadline = time.monotonic() + 120
        while not [e for e in logs if e["event"] == "transform.run"]:
            assert loader.is_alive(), errors
            assert time.monotonic() < deadline, "the first transform run did not end"
            time.sleep(0.2)
        broken.set()
        files.write(range(10, 20))  # the next batch fails before its commit
        loader.join(timeout=60)
    assert not loader.is_alive(), "the process waits for ever on the transform thread"
    assert [str(e) for e in errors] == ["a defect in the loader"]
    assert shutdown.requested


def test_a_parsed_manifest_is_kept_until_a_file_of_the_project_changes(tmp_path: Path) -> None:
    settings = load_settings(_env(tmp_path))
    dbt = dbt_for(settings)
    materialize(settings.transform.project_dir, dbt.project_dir, load_contracts(settings.transform.contracts_dir))
    first = dbt.manifest()
    assert dbt.manifest() is first  # dbt's own output (target/, logs/) changes nothing
    model = dbt.project_dir / "models" / "gold" / "dim_customers.sql"
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert dbt.manifest() is not first


def test_the_fingerprint_leaves_out_dbts_output(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.sql").write_text("select 1")
    before = project_fingerprint(tmp_path)
    for output in ("target", "logs"):
        (tmp_path / output).mkdir()
        (tmp_path / output / "x.json").write_text("{}")
    assert project_fingerprint(tmp_path) == before
    (tmp_path / "models" / "b.sql").write_text("select 2")
    assert project_fingerprint(tmp_path) != before


def test_the_parts_of_a_full_run_are_every_node_of_the_project_once(tmp_path: Path) -> None:
    settings = load_settings(_env(tmp_path))
    dbt = dbt_for(settings)
    contracts = load_contracts(settings.transform.contracts_dir)
    materialize(settings.transform.project_dir, dbt.project_dir, contracts)

    def nodes(select: list[str], indirect: str | None) -> list[str]:
        options = ["--output", "json", "--output-keys", "unique_id"]
        options += [flag for kind in ("model", "test", "unit_test") for flag in ("--resource-type", kind)]
        options += ["--select", *select] if select else []
        options += ["--indirect-selection", indirect] if indirect else []
        outcome = dbt.invoke(["ls"], *options)
        assert outcome.success, outcome.exception
        return [json.loads(line)["unique_id"] for line in outcome.result]

    everything = nodes([], None)
    parts = full_run_parts(contracts)
    assert len(parts) == len(contracts) + 1
    assert all(not exclude for _, exclude, _ in parts)
    chosen = [node for select, _, indirect in parts for node in nodes(select, indirect)]
    assert sorted(chosen) == sorted(everything)  # each node in exactly one part
    assert any(n.startswith("test.cdcflow.silver_matches_bronze__customers") for n in everything)


def test_a_broken_contract_file_fails_the_transform_runs_and_the_process_goes_on(tmp_path: Path) -> None:
    """A half-written contract version in the lake: the transform raised on it, which ended the loader it ran
    beside, at every restart. Now that table stops loading, every transform run is an error naming the file,
    and the other tables still load."""
    settings = load_settings(_env(tmp_path))
    lake = LocalLake(tmp_path / "lake")
    customers = (repo_root() / "schemas" / "lending.customers.avsc").read_text()
    lake.write("_contracts/lending.customers/v00002.avsc", customers[: len(customers) // 2].encode())
    LakeFiles(lake, lending_contract("transactions")).write(range(0, 10))
    with _loader_running(settings) as (logs, loader, codes):
        _wait_for_event(logs, "transform.silver_step", loader)  # the full run came before
    assert codes == [0]
    (run,) = [e for e in logs if e["event"] == "transform.run"]
    assert run["status"] == "error"
    assert "v00002.avsc" in run["reason"]
    assert _count(tmp_path / "warehouse.duckdb", "select count(*) from bronze.lending__transactions") == 10
