"""The lake writer at scale: events per CPU-second and peak resident memory as tables and partitions grow.

Five shapes, each captured by a connector of its own from tables of its own (bench/capture.py): 1, 20 and 200
clones of ``lending.transactions``' shape with 6 partitions per topic, the 200 with one partition each (quiet
tables' topics given one partition, README "Lake files and partitions"), and one table whose topic has 64
partitions. The same number of change events in each shape, spread evenly over its tables: inserts (80%),
updates (15%) and deletes (5%, each followed by its tombstone) written through PostgreSQL while the
connector streams (``snapshot.mode=no_data``), so the events are Debezium's own.

Once every shape's events are in Kafka and its connector is gone, the lake writer (native path, the flush
settings of bench/writer_bench.py, the buffer budget of ``--buffer-mib``) reads each shape's topics in a group
of its own, measured from its ``writer.started`` line until the group has committed the end of every
partition: CPU (user + system, every thread) and the kernel's high-water mark of its resident set (VmHWM).
The one-table shape is measured first and again last: the baseline of the same run, and how much the host
drifted meanwhile. ``--rounds N`` measures every shape N times, round after round, so that a shape's figure
is the median of its runs rather than one run on a noisy host. Goals: the median per-event CPU of every shape
within 1.5x the one-table figure (the median of its runs), and every run's peak RSS within the buffer budget
plus :data:`FIXED_OVERHEAD_MIB`.

Everything is removed at the end (connectors, slots, publications, tables, topics). Prints one JSON line.

    .venv/bin/python -m bench.scale_bench [--events 200000] [--buffer-mib 256] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from bench.capture import (
    BenchSource,
    WriterRun,
    bench_source,
    generate_rows,
    run_writer,
    topics_under,
    total_records,
    write_contracts,
)
from services.common.kafka import topic_watermarks
from services.common.settings import KafkaSettings, Settings, load_settings
from services.stack.runtime import Stack, require_healthy

__all__ = ["FIXED_OVERHEAD_MIB", "SHAPES", "ChangePlan", "Shape", "plan_changes", "scale_figures"]

# What the writer holds beyond its buffer budget, whatever the number of tables: the interpreter with
# pyarrow, librdkafka and the native extensions loaded (~150 MiB at writer.started), librdkafka's bounded
# prefetch queue and fetches (a share of the budget), one poll's values (at most a sixteenth of the budget)
# and their decoded columns, and the Parquet encoder's buffers for the file being flushed.
FIXED_OVERHEAD_MIB = 256
_COST_GOAL = 1.5
_CAPTURE_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class Shape:
    """A number of captured tables and the partitions of each one's topic."""

    tables: int
    partitions: int

    @property
    def label(self) -> str:
        return f"{self.tables}x{self.partitions}"


SHAPES = (Shape(1, 6), Shape(20, 6), Shape(200, 6), Shape(200, 1), Shape(1, 64))


@dataclass(frozen=True, slots=True)
class ChangePlan:
    """Per table: rows inserted, the first ``updates`` of them updated, the last ``deletes`` deleted."""

    tables: int
    inserts: int
    updates: int
    deletes: int

    @property
    def records(self) -> int:
        """Kafka records the connector writes: one per change, plus a tombstone per delete."""
        return self.tables * (self.inserts + self.updates + 2 * self.deletes)

    @property
    def changes(self) -> int:
        return self.tables * (self.inserts + self.updates + self.deletes)


def plan_changes(events: int, tables: int) -> ChangePlan:
    """About ``events`` changes over ``tables`` tables: 80% inserts, 15% updates, 5% deletes of each table."""
    per_table = max(20, round(events / tables))
    updates, deletes = round(per_table * 0.15), round(per_table * 0.05)
    return ChangePlan(tables, per_table - updates - deletes, updates, deletes)


def _table_names(count: int) -> list[str]:
    return [f"t{i:03d}" for i in range(count)]


def _write_changes(source: BenchSource, plan: ChangePlan) -> None:
    with source.connect() as conn:
        for name in _table_names(plan.tables):
            generate_rows(conn, source.schema, name, plan.inserts)
            table = sql.Identifier(source.schema, name)
            update = "update {} set amount = amount + 1, reference = reference || '-u' where transaction_id <= %s"
            conn.execute(sql.SQL(update).format(table), (plan.updates,))
            conn.execute(
                sql.SQL("delete from {} where transaction_id > %s").format(table), (plan.inserts - plan.deletes,)
            )


def _wait_captured(kafka: KafkaSettings, prefix: str, records: int) -> list[str]:
    """Waits until the topics under ``prefix`` hold ``records`` records; the topics."""
    deadline = time.monotonic() + _CAPTURE_TIMEOUT_S
    while True:
        topics = topics_under(kafka, prefix)
        held = total_records(kafka, topics) if topics else 0
        if held >= records:
            return topics
        if time.monotonic() > deadline:
            raise SystemExit(f"{prefix}: {held} of {records} records captured in {_CAPTURE_TIMEOUT_S:.0f} s")
        time.sleep(1.0)


def _ends(kafka: KafkaSettings, topics: list[str]) -> dict[tuple[str, int], int]:
    return {(t, p): high for t in topics for p, (_, high) in topic_watermarks(kafka, t).items() if high > 0}


@dataclass(frozen=True, slots=True)
class Captured:
    shape: Shape
    prefix: str
    plan: ChangePlan
    contracts: Path
    ends: dict[tuple[str, int], int]
    capture_s: float


def _capture(settings: Settings, source: BenchSource, shape: Shape, events: int, folder: Path) -> Captured:
    plan = plan_changes(events, shape.tables)
    source.create_tables(_table_names(shape.tables))
    source.register(partitions=shape.partitions, snapshot_mode="no_data")
    source.wait_slot_active()
    began = time.monotonic()
    _write_changes(source, plan)
    topics = _wait_captured(settings.kafka, source.prefix, plan.records)
    capture_s = time.monotonic() - began
    contracts = folder / "contracts"
    write_contracts(settings.postgres.dsn(), source.schema, contracts)
    source.unregister()  # Connect's task stops before any writer is measured
    return Captured(shape, source.prefix, plan, contracts, _ends(settings.kafka, topics), capture_s)


def _measure(settings: Settings, captured: Captured, folder: Path, buffer_mib: int) -> WriterRun:
    return run_writer(
        settings,
        prefix=captured.prefix,
        ends=captured.ends,
        folder=folder,
        contracts=captured.contracts,
        env={"CDCFLOW_WRITER__CONSUMER": "native", "CDCFLOW_WRITER__BUFFER_MAX_BYTES": str(buffer_mib << 20)},
    )


def scale_figures(
    runs: list[tuple[Shape, int, WriterRun]], *, buffer_mib: int, overhead_mib: int = FIXED_OVERHEAD_MIB
) -> dict[str, Any]:
    """The JSON figures: per run its rate and memory; per shape the median CPU per event of its runs against the
    one-table baseline (the median of the runs of the first shape) and its highest peak RSS; whether both goals
    hold."""
    base_us = 1e6 * statistics.median(r.cpu_s / records for shape, records, r in runs if shape == runs[0][0])
    bound = buffer_mib + overhead_mib
    shapes: list[dict[str, Any]] = []
    for shape, records, run in runs:
        cost_us = 1e6 * run.cpu_s / records
        shapes.append(
            {
                "shape": shape.label,
                "tables": shape.tables,
                "partitions_per_table": shape.partitions,
                "events": records,
                "events_per_cpu_s": round(records / run.cpu_s),
                "cpu_us_per_event": round(cost_us, 2),
                "cost_vs_one_table": round(cost_us / base_us, 2),
                "cpu_s": round(run.cpu_s, 2),
                "wall_s": round(run.wall_s, 1),
                "rss_at_start_mib": round(run.rss_at_start_mib),
                "peak_rss_mib": round(run.peak_rss_mib),
                "lake_files": run.lake_files,
            }
        )
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for figure in shapes:
        by_shape.setdefault(figure["shape"], []).append(figure)
    summary = [
        {
            "shape": label,
            "runs": len(of_shape),
            "events_per_cpu_s": round(statistics.median(r["events_per_cpu_s"] for r in of_shape)),
            "cost_vs_one_table": round(statistics.median(r["cpu_us_per_event"] for r in of_shape) / base_us, 2),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in of_shape),
        }
        for label, of_shape in by_shape.items()
    ]
    return {
        "benchmark": "scale",
        "buffer_budget_mib": buffer_mib,
        "fixed_overhead_mib": overhead_mib,
        "rss_bound_mib": bound,
        "baseline_cpu_us_per_event": round(base_us, 2),
        "runs": shapes,
        "shapes": summary,
        "rss_goal_met": all(s["peak_rss_mib"] <= bound for s in summary),
        "cost_goal_met": all(s["cost_vs_one_table"] <= _COST_GOAL for s in summary),
        "worst_cost_vs_one_table": max(s["cost_vs_one_table"] for s in summary),
        "worst_peak_rss_mib": max(s["peak_rss_mib"] for s in summary),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="row changes per shape")
    parser.add_argument("--buffer-mib", type=int, default=256, help="the writer's buffer budget")
    parser.add_argument("--rounds", type=int, default=1, help="measurements of every shape, round after round")
    args = parser.parse_args()
    settings = load_settings()
    require_healthy(Stack(settings))
    run_id = uuid.uuid4().hex[:6]
    runs: list[tuple[Shape, int, WriterRun]] = []
    capture: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="cdcflow-scale-bench-") as folder, ExitStack() as stack:
        base = Path(folder)
        captured = []
        for index, shape in enumerate(SHAPES):
            prefix = f"bscale{run_id}s{index}"
            source = stack.enter_context(bench_source(settings, prefix=prefix, schema=prefix))
            captured.append(_capture(settings, source, shape, args.events, base / prefix))
            capture[shape.label] = round(captured[-1].capture_s, 1)
        for attempt, item in enumerate([*captured * max(1, args.rounds), captured[0]]):
            run = _measure(settings, item, base / item.prefix / f"writer{attempt}", args.buffer_mib)
            runs.append((item.shape, item.plan.records, run))
    figures = scale_figures(runs, buffer_mib=args.buffer_mib)
    figures["changes_per_shape"] = args.events
    figures["rounds"] = max(1, args.rounds)
    figures["capture_s"] = capture
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
