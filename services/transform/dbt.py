"""dbt through its Python entry point (``dbt.cli.main.dbtRunner``), with typed results.

dbt's own console output is switched off (``--log-level none``): what a run did reaches our structured logs
and metrics from its run results instead, and dbt's detailed log goes to ``<work_dir>/logs/dbt.log``.
The profile (``dbt/profiles.yml``) reads its settings from ``CDCFLOW_…`` variables; :class:`Dbt` sets them
for the length of an invocation only.

:class:`Dbt` keeps the manifest it parsed and hands it to every invocation until a file of the project changes:
a silver step of two models costs about 0.9 s then, against 1.4 s when dbt parses again (BENCHMARKS.md).

dbt-duckdb keeps the DuckDB file open after an invocation (its connection environment is a class
attribute, made for many invocations in one process). A scheduled transform must not: the loader writes
the same file between runs. :func:`release_duckdb` closes it after every invocation.

dbt runs in this process, not in a child of its own. Its only helper process is the resource tracker that
Python's ``multiprocessing`` starts for dbt's locks; it reads a pipe that only this process holds and exits
when this process does, however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.logging import get_logger
from services.transform.errors import DbtInvocationError

__all__ = ["BuildResult", "Dbt", "NodeResult", "close_log_files", "project_fingerprint", "release_duckdb"]

log = get_logger(__name__)

# dbt's node statuses (dbt.artifacts.schemas.results.NodeStatus), as strings.
PASSED = frozenset({"success", "pass", "no-op"})
FAILED = frozenset({"fail", "error", "runtime error", "partial success"})
WARNED = frozenset({"warn"})

_ENV_LOCK = threading.Lock()  # os.environ is process-wide: one invocation at a time sets it


@dataclass(frozen=True, slots=True)
class NodeResult:
    """One node of a run: a model, a data test or a unit test."""

    unique_id: str
    name: str
    resource_type: str  # model | test | unit_test | seed | snapshot | …
    status: str
    message: str
    failures: int
    seconds: float
    model: str  # the model a test belongs to; the test's own name for a test of several models

    @property
    def is_test(self) -> bool:
        return self.resource_type in {"test", "unit_test"}

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    @property
    def warned(self) -> bool:
        return self.status in WARNED


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What one ``dbt build`` did. ``error`` is set when dbt could not run at all."""

    success: bool
    nodes: tuple[NodeResult, ...] = ()
    error: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.failed]

    @property
    def warned(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.warned]

    @property
    def skipped(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status == "skipped"]

    def counts(self) -> dict[str, int]:
        """Nodes by ``<resource type>.<status>``, e.g. ``{"model.success": 15, "test.pass": 98}``."""
        return dict(sorted(Counter(f"{n.resource_type}.{n.status}".replace(" ", "_") for n in self.nodes).items()))

    def test_failures_by_model(self) -> dict[str, int]:
        """Failing (or erroring) tests per model; every model that had a test in this run is listed."""
        by_model: dict[str, int] = {}
        for node in self.nodes:
            if node.is_test:
                by_model[node.model] = by_model.get(node.model, 0) + (1 if node.failed else 0)
        return by_model


def _model_of(node: Any) -> str:
    """The model a test is attached to, by name; a test of several models keeps its own name."""
    attached = getattr(node, "attached_node", None)
    if attached:
        return str(attached).split(".")[-1]
    if getattr(node, "resource_type", "") == "unit_test":
        return str(getattr(node, "model", "") or node.name)
    return str(node.name)


def _node_result(result: Any) -> NodeResult:
    node = result.node
    failures = result.failures if isinstance(result.failures, int) else 0
    return NodeResult(
        unique_id=str(node.unique_id),
        name=str(node.name),
        resource_type=str(node.resource_type),
        status=str(result.status),
        message=str(result.message or ""),
        failures=failures,
        seconds=float(result.execution_time or 0.0),
        model=_model_of(node),
    )


def close_log_files() -> None:
    """Close the log file dbt opened for the last invocation.

    dbt replaces its loggers at the start of each invocation without closing the previous file handler,
    which leaks one open ``dbt.log`` per run in a long-lived process.
    """
    from dbt_common.events.event_manager_client import get_event_manager

    for logger in getattr(get_event_manager(), "loggers", []):
        python_logger = getattr(logger, "_python_logger", None)
        for handler in list(getattr(python_logger, "handlers", [])):
            if isinstance(handler, logging.FileHandler):
                handler.close()
                python_logger.removeHandler(handler)  # type: ignore[union-attr]


def release_duckdb() -> None:
    """Close the DuckDB file dbt-duckdb keeps open between invocations (no-op for other adapters)."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # dbt-duckdb not installed: nothing to release
        return
    environment = getattr(DuckDBConnectionManager, "_ENV", None)
    DuckDBConnectionManager.close_all_connections()  # type: ignore[no-untyped-call]  # dbt-duckdb is untyped
    if environment is not None:
        environment.close()


def project_fingerprint(project_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Every source file of the project with its size and modification time: a parsed manifest is valid while
    this stays the same (dbt's own output, ``target/`` and ``logs/``, is left out)."""
    from services.transform.project import IGNORED

    found: list[tuple[str, int, int]] = []
    for path in sorted(project_dir.rglob("*")):
        relative = path.relative_to(project_dir)
        if relative.parts[0] in IGNORED or not path.is_file():
            continue
        stat = path.stat()
        found.append((relative.as_posix(), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@dataclass(slots=True)
class Dbt:
    """One dbt project and profile; every call is one ``dbtRunner`` invocation."""

    project_dir: Path
    target: str
    target_path: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    profiles_dir: Path | None = None  # default: the project directory
    _manifest: Any = field(default=None, init=False, repr=False)
    _parsed_from: tuple[tuple[str, int, int], ...] = field(default=(), init=False, repr=False)

    def _common(self) -> list[str]:
        return [
            "--project-dir",
            str(self.project_dir),
            "--profiles-dir",
            str(self.profiles_dir or self.project_dir),
            "--target",
            self.target,
            "--target-path",
            str(self.target_path),
            "--log-path",
            str(self.log_path),
        ]

    def invoke(self, command: Sequence[str], *options: str, manifest: Any = None) -> Any:
        """Run ``dbt <command> <options>`` quietly (on ``manifest`` when given, without parsing); returns dbt's
        ``dbtRunnerResult``."""
        from dbt.cli.main import dbtRunner

        args = [*command, *self._common(), "--log-level", "none", "--log-level-file", "info", *options]
        with _environment(self.env):
            try:
                return dbtRunner(manifest=manifest).invoke(args)
            finally:
                release_duckdb()
                close_log_files()

    def manifest(self) -> Any:
        """The parsed project: kept while no file of the project changes, parsed again when one does."""
        fingerprint = project_fingerprint(self.project_dir)
        if self._manifest is None or fingerprint != self._parsed_from:
            self._manifest = self.parse()
            self._parsed_from = fingerprint
        return self._manifest

    def build(
        self,
        *,
        select: Sequence[str] = (),
        exclude: Sequence[str] = (),
        full_refresh: bool = False,
        variables: Mapping[str, Any] | None = None,
        models_only: bool = False,
        indirect_selection: str | None = None,
    ) -> BuildResult:
        """``dbt build`` (``dbt run`` with ``models_only``: the models, no tests) on the kept manifest;
        ``indirect_selection``: dbt's rule for the tests of selected models (``cautious``: only tests whose
        every parent is selected). A ``models_only`` run writes no ``manifest.json``, graph or
        ``run_results.json``: those describe the whole project, so with 50 tables writing them took half of a
        step of two models, and ``target/`` keeps the last full run's results (BENCHMARKS.md)."""
        options: list[str] = []
        if select:
            options += ["--select", *select]
        if indirect_selection:
            options += ["--indirect-selection", indirect_selection]
        if exclude:
            options += ["--exclude", *exclude]
        if full_refresh:
            options.append("--full-refresh")
        if models_only:
            options.append("--no-write-json")
        if variables:
            import json

            options += ["--vars", json.dumps(dict(variables))]
        began = time.monotonic()
        try:  # variables are read while parsing: a run with its own parses its own
            manifest = None if variables else self.manifest()
        except DbtInvocationError as exc:
            return BuildResult(success=False, error=str(exc), seconds=time.monotonic() - began)
        outcome = self.invoke(["run" if models_only else "build"], *options, manifest=manifest)
        seconds = time.monotonic() - began
        if outcome.exception is not None or outcome.result is None:
            error = repr(outcome.exception) if outcome.exception is not None else "dbt returned no result"
            return BuildResult(success=False, error=error, seconds=seconds)
        nodes = tuple(_node_result(r) for r in outcome.result.results)
        return BuildResult(success=bool(outcome.success), nodes=nodes, seconds=seconds)

    def parse(self) -> Any:
        """``dbt parse``: the manifest, or :class:`DbtInvocationError` with dbt's reason."""
        outcome = self.invoke(["parse"])
        if not outcome.success:
            raise DbtInvocationError(f"dbt parse failed for target {self.target}: {outcome.exception!r}")
        return outcome.result
