"""The demo for a running stack: drive the workload and watch its change events arrive in Kafka."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from services.common.kafka import consumer, end_positions
from services.common.settings import Settings
from services.stack.workload import Workload, WorkloadResult

__all__ = ["DemoReport", "run_demo"]

_QUIET_S = 3.0  # the stream counts as drained after this long without a new event


@dataclass(slots=True)
class DemoReport:
    workload: WorkloadResult
    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (table, op) → count
    tombstones: int = 0
    seconds: float = 0.0


def _op_name(raw: bytes | None) -> str | None:
    """The Debezium op of a value, or None for a tombstone."""
    if raw is None:
        return None
    op = json.loads(raw).get("op")
    return str(op) if op else "?"


def run_demo(settings: Settings, seconds: float, rate: float, seed: int, console: Console) -> DemoReport:
    prefix = re.escape(settings.kafka.topic_prefix)
    tail = consumer(settings.kafka, f"_cdcflow.demo.{uuid.uuid4().hex[:8]}")
    metadata = tail.list_topics(timeout=10)
    topics = sorted(t for t in metadata.topics if re.match(rf"^{prefix}\.lending\.", t))
    tail.assign(end_positions(tail, topics))

    report = DemoReport(workload=WorkloadResult())
    workload = Workload(settings.postgres, seed=seed)

    def drive() -> None:
        report.workload = workload.run(rate, seconds)

    writer = threading.Thread(target=drive, name="workload", daemon=True)
    began = time.monotonic()
    writer.start()
    last_event = time.monotonic()
    try:
        with Live(_view(report, began, writer.is_alive()), console=console, refresh_per_second=4) as live:
            while writer.is_alive() or time.monotonic() - last_event < _QUIET_S:
                for message in tail.consume(2_000, timeout=0.25):
                    if message.error() is not None:
                        continue
                    table = str(message.topic()).rsplit(".", 1)[-1]
                    op = _op_name(message.value())
                    if op is None:
                        report.tombstones += 1
                    else:
                        report.events[(table, op)] += 1
                    last_event = time.monotonic()
                live.update(_view(report, began, writer.is_alive()))
    finally:
        tail.close()
        writer.join()
    report.seconds = time.monotonic() - began
    console.print()
    return report


def _view(report: DemoReport, began: float, writing: bool) -> Group:
    ops = ["c", "u", "d", "r", "t"]
    table = Table("table", *ops, "total", title="change events read from Kafka")
    for name in sorted({t for t, _ in report.events}):
        counts = [report.events[(name, op)] for op in ops]
        table.add_row(name, *map(str, counts), str(sum(counts)))
    state = "workload running" if writing else "draining"
    total = sum(report.events.values())
    return Group(table, f"{state} · {time.monotonic() - began:.0f}s · {total} events · {report.tombstones} tombstones")
