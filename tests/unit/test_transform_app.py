"""The transform's schedule, outcome and metrics, with dbt replaced by canned build results."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from services.common.contracts import TableContract
from services.common.contracts.store import ContractSet
from services.common.lake import LakeTransientError, open_lake
from services.common.metrics import TransformMetrics
from services.common.settings import LakeSettings, load_settings, repo_root
from services.common.signals import Shutdown
from services.transform.app import LAST_RUN_PATH, Transformer, read_last_run, silver_models, write_last_run
from services.transform.changes import ChangedTables
from services.transform.dbt import BuildResult, Dbt, NodeResult
from services.transform.wiring import dbt_for
from services.warehouse.errors import BronzeSchemaError, WarehouseBusyError, WarehouseError
from tests.fixtures.lakefiles import lending_contract


def _node(name: str, status: str, *, kind: str = "test", model: str = "customers", failures: int = 0) -> NodeResult:
    return NodeResult(f"{kind}.cdcflow.{name}", name, kind, status, "", failures, 0.1, model)


PASSED = BuildResult(
    success=True,
    nodes=(
        _node("customers", "success", kind="model", model="customers"),
        _node("unique_customers_customer_id", "pass"),
        _node("relationships_fct", "warn", model="fct_transactions", failures=2),
    ),
)
FAILED = BuildResult(
    success=False,
    nodes=(
        _node("customers", "success", kind="model"),
        _node("silver_matches_bronze__customers", "fail", failures=3),
        _node("unique_customers_customer_id", "pass"),
        _node("dim_customers", "skipped", kind="model", model="dim_customers"),
    ),
)


@dataclass
class CannedDbt:
    """Plays back build results; records the selections it was asked for."""

    project_dir: Path
    results: list[BuildResult]
    calls: list[tuple[list[str], bool]] = field(default_factory=list)
    invocations: list[tuple[str, list[str], list[str]]] = field(default_factory=list)  # command, select, exclude

    def build(
        self,
        *,
        select: Sequence[str] = (),
        exclude: Sequence[str] = (),
        full_refresh: bool = False,
        models_only: bool = False,
        indirect_selection: str | None = None,
    ) -> BuildResult:
        self.calls.append((list(select), full_refresh))
        command = "run" if models_only else f"build{'/' + indirect_selection if indirect_selection else ''}"
        self.invocations.append((command, list(select), list(exclude)))
        return self.results.pop(0)


@dataclass
class Bronze:
    """ensure_bronze: busy for the first ``busy`` calls."""

    busy: int = 0
    ensured: list[str] = field(default_factory=list)

    def __call__(self, contract: TableContract) -> object:
        if self.busy:
            self.busy -= 1
            raise WarehouseBusyError("the loader holds the file")
        self.ensured.append(contract.qualified_name)
        return []


def _transformer(
    tmp_path: Path, dbt: CannedDbt, registry: CollectorRegistry, *, bronze: Bronze | None = None, **kwargs: object
) -> Transformer:
    return Transformer(
        dbt=dbt,
        source_project=repo_root() / "dbt",
        contracts=lambda: ContractSet([lending_contract("customers"), lending_contract("transactions")], {}),
        ensure_bronze=bronze or Bronze(),
        metrics=TransformMetrics(registry),
        shutdown=Shutdown(),
        **{"interval_s": 0.01, "busy_retry_s": 0.01, **kwargs},  # type: ignore[arg-type]
    )


def test_a_passing_run_exits_0_and_records_success(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    dbt = CannedDbt(tmp_path / "project", [PASSED])
    bronze = Bronze()
    code = _transformer(tmp_path, dbt, registry, bronze=bronze, select=["silver"]).run(once=True)
    assert code == 0
    assert dbt.calls == [(["silver"], False)]
    assert bronze.ensured == ["lending.customers", "lending.transactions"]
    assert (tmp_path / "project" / "models" / "silver" / "customers.sql").is_file()  # the working copy
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "success"}) == 1
    assert (registry.get_sample_value("cdcflow_transform_last_success_timestamp_seconds") or 0) > 0
    assert registry.get_sample_value("cdcflow_dbt_test_failures", {"model": "customers"}) == 0
    assert registry.get_sample_value("cdcflow_dbt_test_failures", {"model": "fct_transactions"}) == 0  # warned


def test_a_failed_test_fails_the_run_loudly(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    with capture_logs() as logs:
        code = _transformer(tmp_path, CannedDbt(tmp_path / "project", [FAILED]), registry).run(once=True)
    assert code == 1
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "failure"}) == 1
    assert registry.get_sample_value("cdcflow_transform_last_success_timestamp_seconds") == 0
    assert registry.get_sample_value("cdcflow_dbt_test_failures", {"model": "customers"}) == 1
    failed = [e for e in logs if e["event"] == "transform.test_failed"]
    assert [(e["log_level"], e["node"], e["failures"]) for e in failed] == [
        ("error", "test.cdcflow.silver_matches_bronze__customers", 3)
    ]
    run = next(e for e in logs if e["event"] == "transform.run")
    assert (run["log_level"], run["status"]) == ("error", "failure")
    assert run["nodes"] == {"model.skipped": 1, "model.success": 1, "test.fail": 1, "test.pass": 1}
    assert any(e["event"] == "transform.nodes_skipped" for e in logs)


def test_the_schedule_goes_on_after_a_failure_and_clears_the_failure_gauge(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    shutdown = Shutdown()
    dbt = CannedDbt(tmp_path / "project", [FAILED, PASSED])
    transformer = _transformer(tmp_path, dbt, registry)
    transformer._shutdown = shutdown
    original = dbt.build

    def build_then_stop(**kwargs: object) -> BuildResult:
        result = original(**kwargs)  # type: ignore[arg-type]
        if not dbt.results:
            shutdown.request("test")
        return result

    dbt.build = build_then_stop  # type: ignore[method-assign]
    assert transformer.run(once=False) == 0
    assert len(dbt.calls) == 2
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "failure"}) == 1
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "success"}) == 1
    assert registry.get_sample_value("cdcflow_dbt_test_failures", {"model": "customers"}) == 0


def test_a_locked_warehouse_is_waited_for(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    bronze = Bronze(busy=2)
    dbt = CannedDbt(tmp_path / "project", [PASSED])
    assert _transformer(tmp_path, dbt, registry, bronze=bronze, busy_timeout_s=5.0).run(once=True) == 0
    assert bronze.ensured == ["lending.customers", "lending.transactions"]


def test_a_warehouse_that_stays_locked_is_an_error(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    locked = BuildResult(success=False, error="IOException('Could not set lock on file \"w.duckdb\"')")
    dbt = CannedDbt(tmp_path / "project", [locked] * 50)
    assert _transformer(tmp_path, dbt, registry, busy_timeout_s=0.05).run(once=True) == 1
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "error"}) == 1


def test_a_shutdown_while_the_warehouse_is_locked_stops_the_run_without_an_error(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    transformer = _transformer(tmp_path, CannedDbt(tmp_path / "project", [PASSED]), registry, bronze=Bronze(busy=9))
    transformer._shutdown.request("SIGTERM")  # as the demo ends: the run is waiting for the loader's lock
    with capture_logs() as logs:
        assert transformer.run(once=True) == 1  # nothing was built
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "stopped"}) == 1
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "error"}) is None
    run = next(e for e in logs if e["event"] == "transform.run")
    assert (run["log_level"], run["status"]) == ("info", "stopped")
    assert run["reason"].startswith("shutdown while waiting for the warehouse")


@pytest.mark.parametrize(
    "refused",
    [
        TableContract("lending", "events", lending_contract("customers").columns, ()),  # no primary key
        replace(lending_contract("customers"), table="customers_history"),  # named like customers' history
        replace(lending_contract("transactions"), schema="audit"),  # one table name in two schemas
    ],
    ids=["keyless", "named-like-a-history", "one-name-two-schemas"],
)
def test_a_table_silver_cannot_hold_is_left_out_and_the_others_are_built(
    tmp_path: Path, refused: TableContract
) -> None:
    registry = CollectorRegistry()
    dbt = CannedDbt(tmp_path / "project", [PASSED, PASSED])
    transformer = _transformer(tmp_path, dbt, registry)
    transformer._contracts = lambda: ContractSet(
        [lending_contract("customers"), lending_contract("transactions"), refused], {}
    )
    with capture_logs() as logs:
        assert transformer.run(once=True) == 1
        assert transformer.run(once=True) == 1  # every full run says so, while the table is there
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "failure"}) == 2
    silver = {p.name for p in (dbt.project_dir / "models" / "silver").glob("*.sql")}
    kept = {"customers.sql", "customers_history.sql"}
    if refused.table != "transactions":
        kept |= {"transactions.sql", "transactions_history.sql"}
    assert silver == kept
    left_out = [e for e in logs if e["event"] == "transform.table_left_out"]
    left = {refused.full_name} | ({"lending.transactions"} if refused.table == "transactions" else set())
    assert {e["table"] for e in left_out} == left  # logged once, when it is first left out
    runs = [e for e in logs if e["event"] == "transform.run"]
    assert [r["reason"] for r in runs] == [f"silver left out {', '.join(sorted(left))}"] * 2


def test_a_table_whose_bronze_is_refused_is_passed_over_and_the_others_are_built(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    dbt = CannedDbt(tmp_path / "project", [PASSED])
    ensured: list[str] = []

    def ensure_bronze(contract: TableContract) -> object:
        if contract.table == "customers":
            raise BronzeSchemaError("bronze.lending__customers: column status changed type")
        ensured.append(contract.full_name)
        return []

    transformer = _transformer(tmp_path, dbt, registry)
    transformer._ensure_bronze = ensure_bronze
    with capture_logs() as logs:
        assert transformer.run(once=True) == 0
    assert ensured == ["lending.transactions"]
    assert dbt.calls == [([], False)]
    (refused,) = [e for e in logs if e["event"] == "transform.bronze_refused"]
    assert (refused["table"], refused["log_level"]) == ("lending.customers", "error")
    assert "changed type" in refused["error"]


def test_a_broken_contract_file_fails_the_run_and_the_schedule_goes_on(tmp_path: Path) -> None:
    """A broken contract file crashed the transform, and the loader running it beside itself with it, at every
    restart. Now each run and step is an error naming the file, and nothing is built while it is broken (a
    table left out would break the models that read its silver)."""
    registry = CollectorRegistry()
    dbt = CannedDbt(tmp_path / "project", [])
    transformer = _transformer(tmp_path, dbt, registry, silver_every_s=1.0, changed=lambda: {"lending.customers"})
    broken = {"lending.transactions": "_contracts/lending.transactions/v00002.avsc: not a valid contract"}
    transformer._contracts = lambda: ContractSet([lending_contract("customers")], broken)
    with capture_logs() as logs:
        assert transformer.run(once=True) == 1
        step = transformer.silver_step()
    assert step is not None
    assert (step.status, step.tables) == ("error", ["lending.customers"])
    assert "v00002.avsc: not a valid contract" in str(step.reason)
    (run,) = [e for e in logs if e["event"] == "transform.run"]
    assert run["status"] == "error"
    assert "v00002.avsc: not a valid contract" in run["reason"]
    assert dbt.calls == []
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "error"}) == 1


def test_a_warehouse_error_outside_dbt_fails_the_run_or_step_not_the_process(tmp_path: Path) -> None:
    """The lake or the warehouse failing outside dbt (listing the contracts, creating a bronze table) escaped
    the run and ended the process."""
    registry = CollectorRegistry()

    def unreachable() -> ContractSet:
        raise LakeTransientError("listing _contracts/: connection reset")

    dbt = CannedDbt(tmp_path / "project", [])
    transformer = _transformer(tmp_path, dbt, registry, silver_every_s=1.0, changed=lambda: {"lending.customers"})
    transformer._contracts = unreachable
    assert transformer.run(once=True) == 1
    step = transformer.silver_step()
    assert step is not None
    assert (step.status, step.tables) == ("error", ["lending.customers"])
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "error"}) == 1
    assert dbt.calls == []

    def refused(contract: TableContract) -> object:
        raise WarehouseError(f"creating bronze.{contract.table}: 403 permission denied")

    transformer = _transformer(tmp_path, CannedDbt(tmp_path / "project", [PASSED]), CollectorRegistry())
    transformer._ensure_bronze = refused
    with capture_logs() as logs:
        assert transformer.run(once=True) == 0  # dbt runs: the silver of tables whose bronze is there is built
    assert {e["table"] for e in logs if e["event"] == "transform.bronze_refused"} == {
        "lending.customers",
        "lending.transactions",
    }


def test_the_profile_variables_come_from_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "CDCFLOW_WAREHOUSE__DUCKDB_PATH": "relative/wh.duckdb",
            "CDCFLOW_TRANSFORM__WORK_DIR": str(tmp_path),
            "CDCFLOW_TRANSFORM__THREADS": "3",
            "CDCFLOW_TRANSFORM__BIGQUERY_TOKEN": "s3cret-token",
            "CDCFLOW_TRANSFORM__BIGQUERY_API_ENDPOINT": "http://127.0.0.1:9050",
            "CDCFLOW_WAREHOUSE__BIGQUERY_PROJECT": "analytics",
            "CDCFLOW_SECRETS_DIR": str(tmp_path / "no-secrets"),
        }
    )
    dbt = dbt_for(settings)
    assert dbt.target == "duckdb"  # the warehouse backend, unless CDCFLOW_TRANSFORM__TARGET says otherwise
    assert (dbt.project_dir, dbt.target_path, dbt.log_path) == (
        tmp_path / "project",
        tmp_path / "target",
        tmp_path / "logs",
    )
    assert dbt.env["CDCFLOW_WAREHOUSE__DUCKDB_PATH"] == str(Path("relative/wh.duckdb").resolve())
    assert dbt.env["CDCFLOW_TRANSFORM__THREADS"] == "3"
    assert dbt.env["CDCFLOW_TRANSFORM__BIGQUERY_TOKEN"] == "s3cret-token"
    assert dbt.env["CDCFLOW_TRANSFORM__BIGQUERY_API_ENDPOINT"] == "http://127.0.0.1:9050"
    assert dbt.env["CDCFLOW_WAREHOUSE__BIGQUERY_PROJECT"] == "analytics"
    dumped = settings.safe_dump()["transform"]
    assert dumped["bigquery_token"] == "**********"
    assert "s3cret-token" not in str(settings.safe_dump())


def test_dbt_on_bigquery_reaches_the_loaders_endpoint_by_default(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "CDCFLOW_WAREHOUSE__BACKEND": "bigquery",
            "CDCFLOW_WAREHOUSE__BIGQUERY_API_ENDPOINT": "http://127.0.0.1:9051",
            "CDCFLOW_SECRETS_DIR": str(tmp_path),
        }
    )
    dbt = dbt_for(settings)
    assert dbt.target == "bigquery"
    assert dbt.env["CDCFLOW_TRANSFORM__BIGQUERY_API_ENDPOINT"] == "http://127.0.0.1:9051"


def test_every_run_leaves_a_record_of_its_outcome_for_the_monitor(tmp_path: Path) -> None:
    lake = open_lake(LakeSettings(), str(tmp_path / "lake"))
    transformer = _transformer(
        tmp_path,
        CannedDbt(tmp_path / "project", [FAILED, PASSED]),
        CollectorRegistry(),
        record_run=partial(write_last_run, lake),
    )
    before = time.time()
    assert read_last_run(lake) is None
    transformer.cycle()
    failed = read_last_run(lake)
    assert failed is not None
    assert failed.status == "failure"
    assert not failed.success
    assert failed.finished_at >= before
    transformer.cycle()
    passed = read_last_run(lake)
    assert passed is not None
    assert passed.success
    assert passed.finished_at >= failed.finished_at
    assert [f.path for f in lake.list("_transform/")] == [LAST_RUN_PATH]  # one record, no temporary file


# --- silver steps between full runs ---------------------------------------------------------------------


def test_a_silver_step_runs_only_the_models_of_the_tables_whose_bronze_changed(tmp_path: Path) -> None:
    changes = ChangedTables()
    dbt = CannedDbt(tmp_path / "project", [PASSED])
    transformer = _transformer(tmp_path, dbt, CollectorRegistry(), silver_every_s=1.0, changed=changes.take)
    assert transformer.silver_step() is None  # nothing loaded: dbt is not invoked at all
    assert dbt.invocations == []
    changes.add("lending.transactions")
    changes.add("lending.unknown")  # a table without a contract here has no silver
    with capture_logs() as logs:
        step = transformer.silver_step()
    assert step is not None
    assert (step.status, step.tables) == ("success", ["lending.transactions"])
    assert dbt.invocations == [("run", ["transactions", "transactions_history"], [])]
    line = next(e for e in logs if e["event"] == "transform.silver_step")
    assert (line["status"], line["tables"]) == ("success", ["lending.transactions"])
    assert transformer.silver_step() is None  # taken: the next step has nothing to do


def test_a_failed_silver_step_is_retried_with_the_tables_loaded_since(tmp_path: Path) -> None:
    changes = ChangedTables()
    failed = BuildResult(success=False, nodes=(_node("customers", "error", kind="model"),))
    dbt = CannedDbt(tmp_path / "project", [failed, PASSED])
    transformer = _transformer(tmp_path, dbt, CollectorRegistry(), silver_every_s=1.0, changed=changes.take)
    changes.add("lending.customers")
    with capture_logs() as logs:
        step = transformer.silver_step()
    assert step is not None
    assert step.status == "failure"
    assert any(e["event"] == "transform.node_failed" for e in logs)
    changes.add("lending.transactions")
    again = transformer.silver_step()
    assert again is not None
    assert again.status == "success"
    assert dbt.invocations[1] == (
        "run",
        ["customers", "customers_history", "transactions", "transactions_history"],
        [],
    )
    assert transformer.silver_step() is None


def test_a_silver_step_without_a_change_feed_builds_every_tables_silver(tmp_path: Path) -> None:
    dbt = CannedDbt(tmp_path / "project", [PASSED])
    step = _transformer(tmp_path, dbt, CollectorRegistry(), silver_every_s=1.0).silver_step()
    assert step is not None
    assert step.tables == ["lending.customers", "lending.transactions"]
    assert dbt.invocations == [("run", ["customers", "customers_history", "transactions", "transactions_history"], [])]


def test_a_silver_step_kept_from_the_warehouse_keeps_its_tables(tmp_path: Path) -> None:
    changes = ChangedTables()
    dbt = CannedDbt(tmp_path / "project", [PASSED])
    bronze = Bronze(busy=1)
    transformer = _transformer(
        tmp_path, dbt, CollectorRegistry(), bronze=bronze, silver_every_s=1.0, changed=changes.take
    )
    changes.add("lending.customers")
    step = transformer.silver_step()
    assert step is not None
    assert step.status == "stopped"
    assert dbt.invocations == []
    step = transformer.silver_step()  # nothing new was loaded, the table is still owed its silver
    assert step is not None
    assert step.status == "success"
    assert dbt.invocations == [("run", ["customers", "customers_history"], [])]


def test_with_silver_steps_a_full_run_is_a_build_per_table_then_the_rest_with_steps_between(tmp_path: Path) -> None:
    changes = ChangedTables()
    registry = CollectorRegistry()
    dbt = CannedDbt(tmp_path / "project", [PASSED, PASSED, PASSED, PASSED, FAILED])
    transformer = _transformer(tmp_path, dbt, registry, silver_every_s=1.0, changed=changes.take)
    original = dbt.build

    def load_while_building(**kwargs: object) -> BuildResult:
        if not kwargs.get("models_only"):
            changes.add("lending.customers")  # the loader goes on while dbt builds
        return original(**kwargs)  # type: ignore[arg-type]

    dbt.build = load_while_building  # type: ignore[method-assign]
    with capture_logs() as logs:
        report = transformer.cycle()
    assert dbt.invocations == [
        ("build/cautious", ["customers", "customers_history", "source:bronze.lending__customers"], []),
        ("run", ["customers", "customers_history"], []),
        ("build/cautious", ["transactions", "transactions_history", "source:bronze.lending__transactions"], []),
        ("run", ["customers", "customers_history"], []),
        ("build", ["gold"], []),
    ]
    assert report.status == "failure"  # the last part's failed test fails the run
    assert report.build is not None
    assert len(report.build.nodes) == 2 * len(PASSED.nodes) + len(FAILED.nodes)  # builds, not the steps
    assert [e["status"] for e in logs if e["event"] == "transform.run"] == ["failure"]
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "failure"}) == 1


def test_a_selection_keeps_a_full_run_one_build(tmp_path: Path) -> None:
    dbt = CannedDbt(tmp_path / "project", [PASSED])
    _transformer(tmp_path, dbt, CollectorRegistry(), select=["customers+"], silver_every_s=1.0).cycle()
    assert dbt.invocations == [("build", ["customers+"], [])]


def test_the_schedule_runs_silver_steps_between_full_runs(tmp_path: Path) -> None:
    changes = ChangedTables()
    shutdown = Shutdown()
    dbt = CannedDbt(tmp_path / "project", [PASSED] * 20)
    transformer = _transformer(
        tmp_path, dbt, CollectorRegistry(), silver_every_s=0.01, changed=changes.take, interval_s=3600.0
    )
    transformer._shutdown = shutdown
    original = dbt.build

    def build(**kwargs: object) -> BuildResult:
        result = original(**kwargs)  # type: ignore[arg-type]
        changes.add("lending.transactions")
        if len(dbt.invocations) == 7:
            shutdown.request("test")
        return result

    dbt.build = build  # type: ignore[method-assign]
    assert transformer.run(once=False) == 0
    commands = [command for command, _, _ in dbt.invocations]
    assert commands == ["build/cautious", "run", "build/cautious", "run", "build", "run", "run"]


def test_changed_tables_are_taken_once() -> None:
    changes = ChangedTables()
    changes.add("lending.customers")
    changes.add("lending.customers")
    changes.add("eu/lending.customers")
    assert changes.take() == {"lending.customers", "eu/lending.customers"}
    assert changes.take() == frozenset()


def test_silver_models_name_both_models_of_each_table_by_its_silver_name() -> None:
    other = replace(lending_contract("customers"), source="eu")
    contracts = [lending_contract("customers"), lending_contract("transactions"), other]
    assert silver_models(contracts, {"eu/lending.customers", "lending.transactions"}) == [
        "eu__customers",
        "eu__customers_history",
        "transactions",
        "transactions_history",
    ]
    assert silver_models(contracts, set()) == []


class _RecordingDbt(Dbt):
    """Records each invocation's arguments instead of running dbt."""

    invoked: list[list[str]]

    def manifest(self) -> Any:
        return object()

    def invoke(self, command: Sequence[str], *options: str, manifest: Any = None) -> Any:
        self.invoked.append([*command, *options])
        return SimpleNamespace(exception=None, result=SimpleNamespace(results=[]), success=True)


def test_a_silver_step_writes_no_artifacts_of_the_whole_project(tmp_path: Path) -> None:
    dbt = _RecordingDbt(tmp_path / "project", "duckdb", tmp_path / "target", tmp_path / "logs")
    dbt.invoked = []
    assert dbt.build(select=["customers", "customers_history"], models_only=True).success
    assert dbt.build().success
    step, full = dbt.invoked
    assert step[:4] == ["run", "--select", "customers", "customers_history"]
    assert "--no-write-json" in step
    assert full == ["build"]  # a full run's manifest and run results stay in target/
