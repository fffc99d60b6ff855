"""``cdcflow demo`` on a running stack: the whole pipeline, live, then proof that the warehouse equals the source.

1. The workload writes to PostgreSQL while the lake writer and the loader run (threads of this process, so
   the live view reads their metrics) and the transform runs ``dbt build`` on its interval (a child process:
   dbt is CPU-bound and must not starve the writer; it shares the DuckDB file with the loader through the
   file's lock — whoever finds it taken waits, see ``services/transform``).
2. The live view shows per table the change events, lake rows, DLQ records, the lag of each partition,
   bronze rows and bronze freshness, and the transform's runs.
3. The workload stops; the writer drains (its group commits the end of every captured partition); the last
   files are loaded; one last transform builds silver and gold; ``verify`` compares every captured table with
   silver, row for row; a short summary of the gold marts follows.

Ctrl-C (or SIGTERM) stops everything cleanly at any point: the workload after its current transaction, the
writer and loader after their flush and commit, the transform child after its run. An interrupted demo is
not a failure; drift, a failed transform or a pipeline that does not drain are. Killed outright (``kill -9``),
the demo takes its transform child with it (see ``services.stack.children``): a transform left running would
keep the warehouse locked.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import duckdb
from prometheus_client import CollectorRegistry
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table

from services.common.kafka import TopicPartition, consumer, end_positions
from services.common.settings import Settings
from services.common.signals import Shutdown
from services.consumer.wiring import run_writer, writer_path
from services.loader.wiring import run_loader
from services.stack.children import ServiceChild, service_env
from services.stack.workload import Workload, WorkloadResult
from services.transform.verify import VerifyReport, print_report, verify_contracts, verify_warehouse
from services.transform.wiring import run_transform, work_dir

__all__ = ["DemoReport", "demo_settings", "run_demo"]

_DRAIN_TIMEOUT_S = 120.0
_PLAIN_EVERY_S = 10.0  # without a terminal: one status line this often instead of a live table


@dataclass(slots=True)
class TransformRuns:
    """What the transform child has logged: one ``transform.run`` line per run."""

    ok: int = 0
    failed: int = 0
    stopped: int = 0  # the demo ended it while it waited for the warehouse: neither ok nor failed
    last_seconds: float = 0.0
    last_status: str = ""

    def describe(self) -> str:
        if not self.ok + self.failed + self.stopped:
            return "transform: first run in progress"
        stopped = f", {self.stopped} stopped" if self.stopped else ""
        return (
            f"transform: {self.ok} run(s) ok, {self.failed} failed{stopped}, "
            f"last {self.last_status} in {self.last_seconds:.1f}s"
        )


@dataclass(slots=True)
class DemoReport:
    workload: WorkloadResult = field(default_factory=WorkloadResult)
    tables: dict[str, dict[str, float]] = field(default_factory=dict)
    transform_runs: TransformRuns = field(default_factory=TransformRuns)
    final_transform_ok: bool = False
    verify: VerifyReport | None = None
    seconds: float = 0.0
    drained: bool = False
    interrupted: bool = False
    crashed: list[str] = field(default_factory=list)  # a writer, loader or workload thread that raised

    @property
    def failure(self) -> str | None:
        """Why the demo failed, or None. An interrupted demo has not failed."""
        if self.crashed:
            return "; ".join(self.crashed)
        checks = [
            (not self.drained, "the pipeline did not drain"),
            (
                bool(self.workload.total and not sum(t.get("bronze rows", 0) for t in self.tables.values())),
                "nothing reached bronze",
            ),
            (not self.final_transform_ok, "the transform failed (see its log lines above)"),
            (self.verify is None or self.verify.drift, "silver does not equal the source"),
        ]
        if self.interrupted:
            return None
        return next((reason for failed, reason in checks if failed), None)


def demo_settings(settings: Settings) -> Settings:
    """Short flush and load intervals, so changes reach bronze within seconds; no health ports."""
    return settings.model_copy(
        update={
            "writer": settings.writer.model_copy(
                update={"group_id": "cdcflow-demo", "flush_max_age_s": 2.0, "health_port": 0}
            ),
            "loader": settings.loader.model_copy(update={"interval_s": 3.0, "health_port": 0}),
            "transform": settings.transform.model_copy(update={"health_port": 0}),
        }
    )


def _samples(registry: CollectorRegistry, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def _per_table(writer: CollectorRegistry, loaders: list[CollectorRegistry], prefix: str) -> dict[str, dict[str, float]]:
    """Per table: events, lake rows, dlq, bronze rows, freshness s, and ``lag p<N>`` per partition."""
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def table_of(topic: str) -> str:
        return topic.removeprefix(prefix + ".")

    for labels, value in _samples(writer, "cdcflow_records_consumed_total"):
        rows[table_of(labels["topic"])]["events"] += value
    for labels, value in _samples(writer, "cdcflow_records_written_total"):
        rows[labels["table"]]["lake rows"] += value
    for labels, value in _samples(writer, "cdcflow_records_dlq_total"):
        rows[table_of(labels["topic"])]["dlq"] += value
    for labels, value in _samples(writer, "cdcflow_writer_consume_lag_records"):
        rows[table_of(labels["topic"])][f"lag p{labels['partition']}"] = value
    for loader in loaders:
        for labels, value in _samples(loader, "cdcflow_loader_rows_loaded_total"):
            rows[labels["table"]]["bronze rows"] += value
        for labels, value in _samples(loader, "cdcflow_bronze_freshness_seconds"):
            rows[labels["table"]]["freshness s"] = value
    return {k: dict(v) for k, v in rows.items() if not k.startswith("cdcflow.")}


def _lags(row: dict[str, float]) -> str:
    """The lag of each partition, in partition order: ``0 0 12 0 3 0``."""
    lags = sorted((int(k.removeprefix("lag p")), v) for k, v in row.items() if k.startswith("lag p"))
    return " ".join(f"{v:,.0f}" for _, v in lags) or "-"


_COLUMNS = ("events", "lake rows", "dlq", "bronze rows", "freshness s")


def _view(tables: dict[str, dict[str, float]], status: str) -> RenderableType:
    view = Table("table", *_COLUMNS[:3], "lag per partition", *_COLUMNS[3:], title="cdcflow demo")
    for name in sorted(tables):
        row = tables[name]
        cells = [f"{row.get(c, 0):,.0f}" for c in _COLUMNS]
        view.add_row(name, *cells[:3], _lags(row), *cells[3:])
    return Group(view, status)


def _plain(tables: dict[str, dict[str, float]], status: str) -> str:
    """One line for logs and CI, where a live table cannot redraw."""
    total = defaultdict[str, float](float)
    for row in tables.values():
        for column in ("events", "dlq", "bronze rows"):
            total[column] += row.get(column, 0)
    lag = max((v for row in tables.values() for k, v in row.items() if k.startswith("lag p")), default=0)
    fresh = max((row.get("freshness s", 0) for row in tables.values()), default=0)
    return (
        f"{status} | events {total['events']:,.0f}, dlq {total['dlq']:,.0f}, bronze rows "
        f"{total['bronze rows']:,.0f}, max lag {lag:,.0f}, bronze freshness {fresh:,.0f}s"
    )


def _drained(settings: Settings) -> bool:
    """The writer's group has committed the end of every captured topic."""
    probe = consumer(settings.kafka, settings.writer.group_id)
    try:
        topics = [t for t in probe.list_topics(timeout=10).topics if t.startswith(f"{settings.kafka.topic_prefix}.")]
        ends = {(e.topic, e.partition): e.offset for e in end_positions(probe, topics) if e.offset > 0}
        committed = probe.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
        return all(c.offset >= ends[(c.topic, c.partition)] for c in committed)
    finally:
        probe.close()


def _thread(name: str, target: Callable[[], object], crashed: list[str]) -> threading.Thread:
    """A daemon thread; if ``target`` raises, the error is added to ``crashed`` (a demo failure)."""

    def run() -> None:
        try:
            target()
        except Exception as exc:
            crashed.append(f"the {name} stopped: {exc!r}")
            raise

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _transform_runs(child: ServiceChild) -> TransformRuns:
    runs = TransformRuns()
    for event in child.events("transform.run"):
        match event.get("status"):
            case "success":
                runs.ok += 1
            case "stopped":
                runs.stopped += 1
            case _:
                runs.failed += 1
        runs.last_status, runs.last_seconds = str(event.get("status")), float(event.get("seconds", 0.0))
    return runs


class _Screen:
    """A live table on a terminal; a status line every few seconds anywhere else."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live = Live(console=console, refresh_per_second=2) if console.is_terminal else None
        self._printed_at = float("-inf")

    def __enter__(self) -> _Screen:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def show(self, tables: dict[str, dict[str, float]], status: str) -> None:
        if self._live is not None:
            self._live.update(_view(tables, status))
        elif time.monotonic() - self._printed_at >= _PLAIN_EVERY_S:
            self._console.print(_plain(tables, status), soft_wrap=True)
            self._printed_at = time.monotonic()


def run_demo(
    settings: Settings,
    console: Console,
    stop: Shutdown,
    *,
    seconds: float,
    rate: float,
    seed: int,
    transform_every_s: float = 30.0,
) -> DemoReport:
    settings = demo_settings(settings)
    report = DemoReport()
    writer_registry, loader_registry = CollectorRegistry(), CollectorRegistry()
    writer_stop, loader_stop = Shutdown(), Shutdown()
    logs = settings.stack.state_dir / "logs"
    transform = ServiceChild(
        "services.transform",
        service_env(settings, CDCFLOW_TRANSFORM__WORK_DIR=str(work_dir(settings))),
        logs / "demo-transform.log",
        ["--every", str(transform_every_s)],
    )
    prefix = settings.kafka.topic_prefix

    def drive() -> None:
        report.workload = Workload(settings.postgres, seed=seed).run(rate, seconds, stopped=lambda: stop.requested)

    def status(phase: str) -> str:
        ops = f" · {report.workload.total} workload operations" if report.workload.total else ""
        return f"{phase} · {time.monotonic() - began:.0f}s{ops} · {_transform_runs(transform).describe()}"

    began = time.monotonic()
    console.print(
        f"demo: workload {rate:g} ops/s for {seconds:g}s; writer, loader (every {settings.loader.interval_s:g}s) and"
        f" transform (every {transform_every_s:g}s, log {transform.log_file}) running\n{_writer_path(settings)}"
    )
    writer = _thread("writer", lambda: run_writer(settings, writer_stop, registry=writer_registry), report.crashed)
    loader = _thread(
        "loader", lambda: run_loader(settings, loader_stop, once=False, registry=loader_registry), report.crashed
    )
    transform.start()
    workload = _thread("workload", drive, report.crashed)
    try:
        with _Screen(console) as screen:
            while workload.is_alive() and not stop.requested and not report.crashed:
                screen.show(_per_table(writer_registry, [loader_registry], prefix), status("workload running"))
                stop.wait(0.5)
            transform.request_stop()  # its current run finishes; the last run comes after the drain
            deadline = time.monotonic() + _DRAIN_TIMEOUT_S
            while not stop.requested and not report.crashed and time.monotonic() < deadline:
                screen.show(_per_table(writer_registry, [loader_registry], prefix), status("draining"))
                if _drained(settings):
                    report.drained = True
                    break
                stop.wait(1.0)
    finally:
        writer_stop.request("demo finished")
        loader_stop.request("demo finished")
        workload.join()
        writer.join()
        loader.join()
        transform.stop()
    report.transform_runs = _transform_runs(transform)
    report.interrupted = stop.requested
    if not report.interrupted:
        final_loads = CollectorRegistry()
        run_loader(settings, stop, once=True, registry=final_loads)  # whatever the last flush wrote
        report.tables = _per_table(writer_registry, [loader_registry, final_loads], prefix)
    else:
        report.tables = _per_table(writer_registry, [loader_registry], prefix)
    console.print(_view(report.tables, status("drained" if report.drained else "stopped")))
    if report.drained and not stop.requested and not report.crashed:
        _finish(settings, console, stop, report)
    report.seconds = time.monotonic() - began
    return report


def _writer_path(settings: Settings) -> str:
    """What the writer consumes and decodes with, and why."""
    w = settings.writer
    path = writer_path(w.consumer, w.json_reader)
    return (
        f"writer path: {path.describe()} "
        f"(CDCFLOW_WRITER__CONSUMER={w.consumer}, CDCFLOW_WRITER__JSON_READER={w.json_reader})"
    )


def _finish(settings: Settings, console: Console, stop: Shutdown, report: DemoReport) -> None:
    """The last transform, verify, and the gold marts."""
    console.print("transform: the last `dbt build` (silver, gold and every test) …")
    built = time.monotonic()
    report.final_transform_ok = run_transform(settings, stop, once=True) == 0
    console.print(
        f"transform: {'done' if report.final_transform_ok else '[red]failed[/]'} in {time.monotonic() - built:.1f}s"
    )
    if not report.final_transform_ok or stop.requested:
        report.interrupted = stop.requested
        return
    console.print("verify: every captured table against silver, row for row")
    report.verify = verify_warehouse(settings, verify_contracts(settings))
    print_report(report.verify, console)
    if not report.verify.drift:
        _print_gold(settings, console)


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = conn.execute(sql)
    return [str(d[0]) for d in cursor.description or []], cursor.fetchall()


def _table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(_cell(column, v) for column, v in zip(columns, row, strict=True)))
    return table


def _cell(column: str, value: object) -> str:
    if column.endswith("_id"):  # an identifier, not a quantity: no thousands separators
        return str(value)
    if isinstance(value, float | Decimal):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _print_gold(settings: Settings, console: Console) -> None:
    with duckdb.connect(str(settings.duckdb_path()), read_only=True) as conn:
        columns, rows = _rows(
            conn,
            "select value_month, currency, transaction_count, deposits, withdrawals, disbursals, payments,"
            " net_lending from gold.financial_summary order by value_month desc, transaction_count desc limit 6",
        )
        console.print(_table("gold.financial_summary (latest months)", columns, rows))
        columns, rows = _rows(
            conn,
            "select s.customer_id, c.full_name, s.risk_band, s.risk_score, s.outstanding_exposure"
            " from gold.customer_risk_scores as s join gold.dim_customers as c using (customer_id)"
            " order by s.risk_score desc, s.outstanding_exposure desc limit 5",
        )
        console.print(_table("gold.customer_risk_scores (top 5)", columns, rows))
