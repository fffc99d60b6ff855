"""The transform's cycle: contracts → working copy of the dbt project → bronze tables → ``dbt build``.

A run's outcome becomes metrics (``cdcflow_transform_*``, ``cdcflow_dbt_test_failures``) and structured logs:
one ``transform.run`` line per run, an error line per failed model or test, a warning per warned test. A
failed run is loud (ERROR logs, ``runs_total{status="failure"}``, exit status 1 with ``--once``) and the
schedule goes on: the next run starts after the interval whatever this one did.

With ``silver_every_s`` the schedule has two lanes. Every ``silver_every_s`` a *silver step* runs only the
silver models (current state and history) of the tables whose bronze changed since the last step — ``dbt run``,
no tests — so silver follows bronze within seconds; every ``interval_s`` the *full run* builds and tests
everything in several invocations (each table's silver with its tests, then the rest) with a silver step
between two of them, so silver never waits for a whole build. Each invocation holds a DuckDB file only for its
own length.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from services.common.contracts import ContractRegistry, TableContract
from services.common.contracts.store import ContractSet
from services.common.errors import CdcflowError
from services.common.lake import Lake, LakeNotFoundError
from services.common.logging import get_logger
from services.common.metrics import TransformMetrics
from services.common.signals import Shutdown
from services.transform.dbt import BuildResult
from services.transform.errors import SilverGenerationError
from services.transform.project import materialize
from services.transform.silver import buildable, history_name, model_name
from services.warehouse.bronze import bronze_table
from services.warehouse.errors import BronzeSchemaError, WarehouseBusyError, WarehouseError

__all__ = [
    "LAST_RUN_PATH",
    "Builder",
    "LastRun",
    "Part",
    "RunReport",
    "StepReport",
    "Transformer",
    "full_run_parts",
    "merge_builds",
    "read_last_run",
    "silver_models",
    "write_last_run",
]

log = get_logger(__name__)

#: The record of the last run, in the lake: what ``cdcflow monitor`` reports from outside, wherever the
#: transform ran (a Kubernetes CronJob's pod and its volumes are gone when the monitor looks).
LAST_RUN_PATH = "_transform/last_run.json"

Status = Literal["success", "failure", "error", "stopped"]
"""success: every model built and every test passed (warnings allowed); failure: a model or test failed;
error: dbt could not run (project, profile, contracts, a warehouse that stayed locked); stopped: a shutdown
came while the run waited for the warehouse, so nothing was built."""


class Builder(Protocol):
    """What the transformer needs of dbt (:class:`services.transform.dbt.Dbt`): its project and ``build``."""

    @property
    def project_dir(self) -> Path: ...

    def build(
        self,
        *,
        select: Sequence[str] = (),
        exclude: Sequence[str] = (),
        full_refresh: bool = False,
        models_only: bool = False,
        indirect_selection: str | None = None,
    ) -> BuildResult: ...


@dataclass(slots=True)
class RunReport:
    status: Status
    build: BuildResult | None = None
    reason: str = ""
    seconds: float = 0.0


@dataclass(slots=True)
class StepReport:
    """A silver step: ``status`` as a run's; ``tables`` the contracts' full names it built silver for."""

    status: Status
    tables: list[str]
    build: BuildResult | None = None
    reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class LastRun:
    status: str
    finished_at: float  # unix time
    seconds: float

    @property
    def success(self) -> bool:
        return self.status == "success"


def write_last_run(lake: Lake, run: LastRun) -> None:
    """Replace the record; a lake write is whole or absent, so a reader never sees half of it."""
    document = {"status": run.status, "finished_at": run.finished_at, "seconds": run.seconds}
    lake.write(LAST_RUN_PATH, json.dumps(document).encode())


def silver_models(contracts: Sequence[TableContract], tables: Collection[str]) -> list[str]:
    """The dbt models of the named tables' silver: ``<silver name>`` and ``<silver name>_history`` each."""
    wanted = sorted((c for c in contracts if c.full_name in set(tables)), key=model_name)
    return [model for c in wanted for model in (model_name(c), history_name(c))]


Part = tuple[list[str], list[str], str | None]
"""One invocation of a full run: dbt's select, exclude and indirect selection."""


def silver_selection(contracts: Sequence[TableContract], tables: Collection[str]) -> list[str]:
    """dbt's selection of the named tables' silver: their models (:func:`silver_models`) and bronze sources."""
    wanted = sorted((c for c in contracts if c.full_name in set(tables)), key=model_name)
    return [*silver_models(wanted, tables), *(f"source:bronze.{bronze_table(c)}" for c in wanted)]


def full_run_parts(contracts: Sequence[TableContract]) -> list[Part]:
    """A full run in parts that a silver step can run between: per table its two silver models and its bronze
    source with the tests that read nothing else (dbt's ``cautious`` indirect selection, so no test waits for a
    gold model not built yet), then gold with every test that reads gold. Together they are every node of the
    project once (a unit test checks it with ``dbt ls``)."""
    per_table: list[Part] = [
        (silver_selection(contracts, {c.full_name}), [], "cautious") for c in sorted(contracts, key=model_name)
    ]
    return [*per_table, (["gold"], [], None)]


def merge_builds(first: BuildResult, second: BuildResult) -> BuildResult:
    """Two invocations reported as one run: the nodes of both; an error is the first one's."""
    return BuildResult(
        success=first.success and second.success,
        nodes=first.nodes + second.nodes,
        error=first.error if first.error is not None else second.error,
        seconds=first.seconds + second.seconds,
    )


def read_last_run(lake: Lake) -> LastRun | None:
    """The last run's record; None when no run has finished yet."""
    try:
        document = json.loads(lake.read(LAST_RUN_PATH))
    except LakeNotFoundError:
        return None
    return LastRun(str(document["status"]), float(document["finished_at"]), float(document["seconds"]))


class Transformer:
    """Runs ``dbt build`` once or on a schedule, and silver steps between builds when ``silver_every_s`` is set.

    ``contracts`` returns every table contract, and why each broken contract file is (read again before each
    run, so new versions are seen; a broken file fails the run, and the process goes on);
    ``ensure_bronze`` creates a table's bronze table if the loader has not yet (silver needs its source);
    ``changed`` returns the full names of the tables whose bronze gained rows since it was last called (the
    loader's, in its process); without it every silver step builds every table's silver.
    """

    def __init__(
        self,
        *,
        dbt: Builder,
        source_project: Path,
        contracts: Callable[[], ContractSet],
        ensure_bronze: Callable[[TableContract], object],
        metrics: TransformMetrics,
        shutdown: Shutdown,
        interval_s: float,
        select: Sequence[str] = (),
        exclude: Sequence[str] = (),
        full_refresh: bool = False,
        busy_timeout_s: float = 60.0,
        busy_retry_s: float = 2.0,
        record_run: Callable[[LastRun], None] | None = None,
        silver_every_s: float = 0.0,
        changed: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self._dbt = dbt
        self._source_project = source_project
        self._contracts = contracts
        self._ensure_bronze = ensure_bronze
        self._metrics = metrics
        self._shutdown = shutdown
        self._interval_s = interval_s
        self._select = list(select)
        self._exclude = list(exclude)
        self._full_refresh = full_refresh
        self._busy_timeout_s = busy_timeout_s
        self._busy_retry_s = busy_retry_s
        self._record_run = record_run
        self._silver_every_s = silver_every_s
        self._changed = changed
        self._pending: set[str] = set()  # tables a failed or skipped step still owes silver
        self._left_out: dict[str, str] = {}  # tables silver cannot hold beside the others, with why
        self._models_with_failures: set[str] = set()
        self.last_cycle_at = time.monotonic()

    def run(self, *, once: bool) -> int:
        if once:
            report = self.cycle()
            self.last_cycle_at = time.monotonic()
            return 0 if report.status == "success" else 1
        next_run = time.monotonic()
        while True:
            began = time.monotonic()
            if began >= next_run:
                self.cycle()
                next_run = began + self._interval_s  # a period: a long run shortens the pause after it
            else:
                self.silver_step()
            self.last_cycle_at = time.monotonic()
            wake = next_run if not self._silver_every_s else min(next_run, began + self._silver_every_s)
            if self._shutdown.wait(max(0.0, wake - time.monotonic())):
                return 0

    def cycle(self) -> RunReport:
        began = time.monotonic()
        try:
            report = self._run()
        except CdcflowError as exc:  # the lake or the warehouse failed outside dbt: this run, not the process
            log.error("transform.run_failed", error=str(exc))
            report = RunReport("error", reason=str(exc))
        report.seconds = time.monotonic() - began
        self._record(report)
        return report

    def silver_step(self) -> StepReport | None:
        """Build the silver of the tables whose bronze changed; None when none did (nothing ran)."""
        began = time.monotonic()
        taken = set(self._changed()) if self._changed is not None else None
        try:
            contracts = self._project()
        except CdcflowError as exc:
            self._pending |= taken or set()
            return self._step_done(StepReport("error", sorted(self._pending), reason=str(exc)), began)
        everything = {c.full_name for c in contracts}
        tables = self._pending | (everything if taken is None else taken & everything)
        if not tables:
            return None
        self._pending = tables  # cleared only by a step that built them
        report = StepReport("success", sorted(tables))
        try:
            self._ensure_bronzes(c for c in contracts if c.full_name in tables)
            build = self._dbt.build(select=silver_models(contracts, tables), models_only=True)
        except WarehouseBusyError as exc:  # the loader of another process holds DuckDB: the next step
            report.status, report.reason = "stopped", str(exc)
            return self._step_done(report, began)
        except CdcflowError as exc:  # the warehouse failed outside dbt: the tables wait for the next step
            report.status, report.reason = "error", str(exc)
            return self._step_done(report, began)
        report.build = build
        if build.error is not None:
            report.status, report.reason = "error", build.error
        elif not build.success or build.failed:
            report.status, report.reason = "failure", _first_failure(build)
        else:
            self._pending = set()
        return self._step_done(report, began)

    def _step_done(self, report: StepReport, began: float) -> StepReport:
        report.seconds = time.monotonic() - began
        build = report.build
        summary = {
            "status": report.status,
            "seconds": round(report.seconds, 3),
            "tables": report.tables,
            "nodes": build.counts() if build is not None else {},
        }
        if report.status == "success":
            log.info("transform.silver_step", **summary)
        elif report.status == "stopped":
            log.info("transform.silver_step", **summary, reason=report.reason)
        else:
            log.error("transform.silver_step", **summary, reason=report.reason)
            if build is not None and build.error is None:
                self._log_nodes(build)
        return report

    # --- one run --------------------------------------------------------------------------------

    def _project(self) -> list[TableContract]:
        """The contracts silver can hold, with the working copy of the project rendered from them; the others
        are left out, named in the log and in every full run's outcome, and the rest is built as usual."""
        read = self._contracts()
        if read.broken:  # a table left out would break the models that read its silver: none is built
            raise SilverGenerationError(
                "silver waits for these contract files to be fixed: " + "; ".join(sorted(read.broken.values()))
            )
        contracts, left_out = buildable(list(ContractRegistry.of(read.contracts)))
        if left_out != self._left_out:
            for table, why in sorted(left_out.items()):
                log.error("transform.table_left_out", table=table, why=why)
            self._left_out = left_out
        project = materialize(self._source_project, self._dbt.project_dir, contracts)
        if project.changed:
            log.info("transform.project", path=str(project.path), written=project.written, removed=project.removed)
        return contracts

    def _parts(self, contracts: Sequence[TableContract]) -> list[Part]:
        """The invocations of a full run: one ``dbt build``, or with silver steps :func:`full_run_parts`,
        unless a selection was asked for."""
        if not self._silver_every_s or self._select or self._exclude or self._full_refresh:
            return [(self._select, self._exclude, None)]
        return full_run_parts(contracts)

    def _run(self) -> RunReport:
        contracts = self._project()
        result: BuildResult | None = None
        for index, (select, exclude, indirect) in enumerate(self._parts(contracts)):
            if index:
                self.silver_step()
            outcome = self._build(contracts, select, exclude, indirect)
            if isinstance(outcome, RunReport):
                return outcome
            result = outcome if result is None else merge_builds(result, outcome)
            if outcome.error is not None:
                break
        assert result is not None  # there is always a part
        if result.error is not None:
            return RunReport("error", result, reason=result.error)
        status: Status = "success" if result.success and not result.failed else "failure"
        if self._left_out:  # the others' silver is built; these tables' is not, which a run must not call success
            return RunReport("failure", result, reason=f"silver left out {', '.join(sorted(self._left_out))}")
        return RunReport(status, result)

    def _build(
        self, contracts: Sequence[TableContract], select: list[str], exclude: list[str], indirect: str | None = None
    ) -> BuildResult | RunReport:
        """One ``dbt build``, waiting up to ``busy_timeout_s`` for a warehouse another process holds; a
        RunReport when it never got the warehouse."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                self._ensure_bronzes(contracts)
                build = self._dbt.build(
                    select=select, exclude=exclude, full_refresh=self._full_refresh, indirect_selection=indirect
                )
            except WarehouseBusyError as exc:
                reason = str(exc)
            else:
                if build.error is None or not _locked(build.error):
                    return build
                reason = build.error
            if time.monotonic() >= deadline:
                return RunReport("error", reason=f"the warehouse stayed locked: {reason}")
            if self._shutdown.wait(self._busy_retry_s):
                return RunReport("stopped", reason=f"shutdown while waiting for the warehouse: {reason}")
            log.info("transform.warehouse_busy", retry_in_s=self._busy_retry_s, reason=reason)

    def _ensure_bronzes(self, contracts: Iterable[TableContract]) -> None:
        """Each table's bronze, as silver reads it. A table whose bronze cannot take its contract (the loader
        stops loading it and says so too) is logged and passed over, so the other tables' silver is built; a
        busy warehouse (:class:`WarehouseBusyError`) is for the caller to wait out."""
        for contract in contracts:
            try:
                self._ensure_bronze(contract)
            except (BronzeSchemaError, WarehouseError) as exc:  # as the loader: this table stops, not all
                log.error("transform.bronze_refused", table=contract.full_name, error=str(exc))

    # --- metrics and logs -----------------------------------------------------------------------

    def _record(self, report: RunReport) -> None:
        metrics = self._metrics
        metrics.runs.labels(report.status).inc()
        metrics.duration.set(report.seconds)
        build = report.build
        if report.status == "success":
            metrics.last_success.set(time.time())
        if self._record_run is not None:
            self._record_run(LastRun(report.status, time.time(), round(report.seconds, 3)))
        if build is not None and build.error is None:
            failures = build.test_failures_by_model()
            for model in self._models_with_failures - set(failures):
                metrics.dbt_test_failures.labels(model).set(0)  # a model whose tests were not run this time
            for model, count in failures.items():
                metrics.dbt_test_failures.labels(model).set(count)
            self._models_with_failures = {m for m, c in failures.items() if c}
            self._log_nodes(build)
        summary = {
            "status": report.status,
            "seconds": round(report.seconds, 3),
            "nodes": build.counts() if build is not None else {},
        }
        if report.status == "success":
            log.info("transform.run", **summary)
        elif report.status == "stopped":
            log.info("transform.run", **summary, reason=report.reason)
        else:
            log.error("transform.run", **summary, reason=report.reason or _first_failure(build))

    def _log_nodes(self, build: BuildResult) -> None:
        for node in build.failed:
            log.error(
                "transform.test_failed" if node.is_test else "transform.node_failed",
                node=node.unique_id,
                model=node.model,
                status=node.status,
                failures=node.failures,
                message=node.message,
            )
        for node in build.warned:
            log.warning("transform.test_warned", node=node.unique_id, model=node.model, failures=node.failures)
        skipped = build.skipped
        if skipped:
            log.warning("transform.nodes_skipped", count=len(skipped), nodes=[n.unique_id for n in skipped][:20])


def _locked(error: str) -> bool:
    """dbt could not open the DuckDB file because another process holds its lock."""
    return "Could not set lock on file" in error or "Conflicting lock" in error


def _first_failure(build: BuildResult | None) -> str:
    if build is None:
        return ""
    failed = build.failed
    return f"{len(failed)} node(s) failed, first {failed[0].unique_id}: {failed[0].message}" if failed else ""
