"""``cdcflow demo`` on a running stack: the workload writes to PostgreSQL while the lake writer and the
loader run; a live view shows each table's change events, lake rows, DLQ records, lag and bronze freshness;
then the workload stops, the pipeline drains, and a summary is printed.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from services.common.kafka import TopicPartition, consumer, end_positions
from services.common.settings import Settings
from services.common.signals import Shutdown
from services.consumer.__main__ import run_writer
from services.loader.__main__ import run_loader
from services.stack.workload import Workload, WorkloadResult

__all__ = ["DemoReport", "demo_settings", "run_demo"]

_DRAIN_TIMEOUT_S = 120.0


@dataclass(slots=True)
class DemoReport:
    workload: WorkloadResult = field(default_factory=WorkloadResult)
    tables: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    drained: bool = False


def demo_settings(settings: Settings) -> Settings:
    """Short flush and load intervals, so changes reach bronze within seconds; no health ports."""
    return settings.model_copy(
        update={
            "writer": settings.writer.model_copy(
                update={"group_id": "cdcflow-demo", "flush_max_age_s": 2.0, "health_port": 0}
            ),
            "loader": settings.loader.model_copy(update={"interval_s": 3.0, "health_port": 0}),
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
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def table_of(topic: str) -> str:
        return topic.removeprefix(prefix + ".")

    for labels, value in _samples(writer, "cdcflow_records_consumed_total"):
        rows[table_of(labels["topic"])]["events"] += value
    for labels, value in _samples(writer, "cdcflow_records_written_total"):
        rows[labels["table"]]["lake rows"] += value
    for labels, value in _samples(writer, "cdcflow_records_dlq_total"):
        rows[table_of(labels["topic"])]["dlq"] += value
    for labels, value in _samples(writer, "cdcflow_consumer_lag_records"):
        table = rows[table_of(labels["topic"])]
        table["lag"] = max(table["lag"], value)
    for loader in loaders:
        for labels, value in _samples(loader, "cdcflow_loader_rows_loaded_total"):
            rows[labels["table"]]["bronze rows"] += value
        for labels, value in _samples(loader, "cdcflow_bronze_freshness_seconds"):
            rows[labels["table"]]["freshness s"] = value
    return {k: dict(v) for k, v in rows.items() if not k.startswith("cdcflow.")}


_COLUMNS = ("events", "lake rows", "dlq", "lag", "bronze rows", "freshness s")


def _view(tables: dict[str, dict[str, float]], state: str, began: float) -> Group:
    view = Table("table", *_COLUMNS, title="cdcflow demo")
    for name in sorted(tables):
        view.add_row(name, *(f"{tables[name].get(c, 0):,.0f}" for c in _COLUMNS))
    return Group(view, f"{state} · {time.monotonic() - began:.0f}s")


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


def _thread(name: str, target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def run_demo(
    settings: Settings, console: Console, stop: Shutdown, *, seconds: float, rate: float, seed: int
) -> DemoReport:
    settings = demo_settings(settings)
    report = DemoReport()
    writer_registry, loader_registry = CollectorRegistry(), CollectorRegistry()
    writer_stop, loader_stop = Shutdown(), Shutdown()

    def drive() -> None:
        report.workload = Workload(settings.postgres, seed=seed).run(rate, seconds)

    began = time.monotonic()
    writer = _thread("writer", lambda: run_writer(settings, writer_stop, registry=writer_registry))
    loader = _thread("loader", lambda: run_loader(settings, loader_stop, once=False, registry=loader_registry))
    workload = _thread("workload", drive)
    prefix = settings.kafka.topic_prefix
    try:
        with Live(console=console, refresh_per_second=2) as live:
            while workload.is_alive() and not stop.requested:
                live.update(_view(_per_table(writer_registry, [loader_registry], prefix), "workload running", began))
                stop.wait(0.5)
            deadline = time.monotonic() + _DRAIN_TIMEOUT_S
            while not stop.requested and time.monotonic() < deadline:
                live.update(_view(_per_table(writer_registry, [loader_registry], prefix), "draining", began))
                if _drained(settings):
                    report.drained = True
                    break
                stop.wait(1.0)
    finally:
        writer_stop.request("demo finished")
        writer.join()
        loader_stop.request("demo finished")
        loader.join()
    final_loads = CollectorRegistry()
    run_loader(settings, Shutdown(), once=True, registry=final_loads)  # whatever the last flush wrote
    report.tables = _per_table(writer_registry, [loader_registry, final_loads], prefix)
    report.seconds = time.monotonic() - began
    console.print(_view(report.tables, "done" if report.drained else "stopped", began))
    return report
