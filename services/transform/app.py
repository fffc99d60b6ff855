"""The transform's cycle: contracts → working copy of the dbt project → bronze tables → ``dbt build``.

A run's outcome becomes metrics (``cdcflow_transform_*``, ``cdcflow_dbt_test_failures``) and structured logs:
one ``transform.run`` line per run, an error line per failed model or test, a warning per warned test. A
failed run is loud (ERROR logs, ``runs_total{status="failure"}``, exit status 1 with ``--once``) and the
schedule goes on: the next run starts after the interval whatever this one did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from services.common.contracts import ContractRegistry, TableContract
from services.common.lake import Lake, LakeNotFoundError
from services.common.logging import get_logger
from services.common.metrics import TransformMetrics
from services.common.signals import Shutdown
from services.transform.dbt import BuildResult
from services.transform.errors import SilverGenerationError
from services.transform.project import materialize
from services.warehouse.errors import WarehouseBusyError

__all__ = ["LAST_RUN_PATH", "Builder", "LastRun", "RunReport", "Transformer", "read_last_run", "write_last_run"]

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
        self, *, select: Sequence[str] = (), exclude: Sequence[str] = (), full_refresh: bool = False
    ) -> BuildResult: ...


@dataclass(slots=True)
class RunReport:
    status: Status
    build: BuildResult | None = None
    reason: str = ""
    seconds: float = 0.0
    project_changes: list[str] = field(default_factory=list)


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


def read_last_run(lake: Lake) -> LastRun | None:
    """The last run's record; None when no run has finished yet."""
    try:
        document = json.loads(lake.read(LAST_RUN_PATH))
    except LakeNotFoundError:
        return None
    return LastRun(str(document["status"]), float(document["finished_at"]), float(document["seconds"]))


class Transformer:
    """Runs ``dbt build`` once or on a schedule.

    ``contracts`` returns every table contract (read again before each run, so new versions are seen);
    ``ensure_bronze`` creates a table's bronze table if the loader has not yet (silver needs its source).
    """

    def __init__(
        self,
        *,
        dbt: Builder,
        source_project: Path,
        contracts: Callable[[], Sequence[TableContract]],
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
        self._models_with_failures: set[str] = set()
        self.last_cycle_at = time.monotonic()

    def run(self, *, once: bool) -> int:
        while True:
            began = time.monotonic()
            report = self.cycle()
            self.last_cycle_at = time.monotonic()
            if once:
                return 0 if report.status == "success" else 1
            wait = max(0.0, self._interval_s - (time.monotonic() - began))
            if self._shutdown.wait(wait):
                return 0

    def cycle(self) -> RunReport:
        began = time.monotonic()
        try:
            report = self._run()
        except SilverGenerationError as exc:
            report = RunReport("error", reason=str(exc))
        report.seconds = time.monotonic() - began
        self._record(report)
        return report

    # --- one run --------------------------------------------------------------------------------

    def _run(self) -> RunReport:
        contracts = list(ContractRegistry.of(self._contracts()))
        project = materialize(self._source_project, self._dbt.project_dir, contracts)
        if project.changed:
            log.info("transform.project", path=str(project.path), written=project.written, removed=project.removed)
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                for contract in contracts:
                    self._ensure_bronze(contract)
                build = self._dbt.build(select=self._select, exclude=self._exclude, full_refresh=self._full_refresh)
            except WarehouseBusyError as exc:
                reason = str(exc)
            else:
                if build.error is None or not _locked(build.error):
                    break
                reason = build.error
            if time.monotonic() >= deadline:
                return RunReport("error", reason=f"the warehouse stayed locked: {reason}")
            if self._shutdown.wait(self._busy_retry_s):
                return RunReport("stopped", reason=f"shutdown while waiting for the warehouse: {reason}")
            log.info("transform.warehouse_busy", retry_in_s=self._busy_retry_s, reason=reason)
        if build.error is not None:
            return RunReport("error", build, reason=build.error, project_changes=project.written)
        status: Status = "success" if build.success and not build.failed else "failure"
        return RunReport(status, build, project_changes=project.written)

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
