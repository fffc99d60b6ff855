"""An initial snapshot: a table of ``--rows`` rows captured from scratch, from connector start to silver with
zero drift, and the share of each stage.

A clone of ``lending.transactions``' shape in a schema of the benchmark's own is filled with ``--rows`` rows
(before the clock starts); its contract comes from the live catalog. The lake writer and the loader run as
child processes with a lake, a DuckDB file and a group of their own, then a connector of the benchmark's own
(``snapshot.mode=initial``, bench/capture.py) is registered: that is the start. Milestones, each polled every
0.5 s:

- **debezium**: the table's topic holds a record per row (Debezium's own start and end, from its snapshot
  notifications, are reported beside it);
- **writer**: the writer's group has committed the end of every partition (its CPU from its
  ``writer.started`` line to here is counted as in bench/writer_bench.py);
- **loader**: the loader's ``loader.loaded`` lines add up to a bronze row per source row;
- **dbt**: ``python -m services.transform --once`` building the table's silver models (current state and
  history, with their tests) has ended;
- **verify**: the table equals silver row for row (``compare_table`` of services/transform/verify.py).

Each stage's share is its time from the previous milestone; the writer's is the tail it needs once Debezium
is done. Beside it: Debezium's rows per second and the writer's events per CPU-second, so the CPU the writer
needs to keep pace with Debezium (a fraction of a core). Everything is removed at the end. Prints one JSON
line.

    .venv/bin/python -m bench.snapshot_bench [--rows 5000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.capture import BenchSource, bench_source, drop_group, generate_rows, total_records, write_contracts
from bench.events import committed_all, cpu_seconds
from services.common.contracts import TableContract, load_contracts
from services.common.kafka import TopicPartition, consumer, ensure_topics, topic_watermarks
from services.common.settings import KafkaSettings, Settings, load_settings
from services.stack.children import ServiceChild, service_env
from services.stack.runtime import Stack, require_healthy
from services.transform.silver import model_name
from services.transform.verify import DuckDBSilver, PostgresSource, TableComparison, compare_table

__all__ = ["STAGES", "debezium_window", "stage_figures"]

TABLE = "snapshot_transactions"
STAGES = ("debezium", "writer", "loader", "dbt", "verify")
_STAGE_TIMEOUT_S = 7_200.0


def debezium_window(values: list[bytes]) -> tuple[float | None, float | None]:
    """Debezium's initial snapshot STARTED and COMPLETED times (epoch seconds) from its notification records."""
    started = completed = None
    for value in values:
        note = json.loads(value)
        kind = note.get("aggregate_type") or note.get("aggregateType")
        if kind != "Initial Snapshot" or "timestamp" not in note:
            continue
        at = int(note["timestamp"]) / 1000
        if note.get("type") == "STARTED":
            started = at if started is None else min(started, at)
        elif note.get("type") == "COMPLETED":
            completed = at if completed is None else max(completed, at)
    return started, completed


def stage_figures(start: float, marks: dict[str, float]) -> dict[str, Any]:
    """Each stage's seconds from the previous milestone (the first from ``start``) and its share of the whole."""
    seconds: dict[str, float] = {}
    previous = start
    for stage in STAGES:
        seconds[stage] = marks[stage] - previous
        previous = marks[stage]
    total = previous - start
    return {
        "total_s": round(total, 1),
        "to_silver_s": round(marks["dbt"] - start, 1),
        "stage_s": {stage: round(s, 1) for stage, s in seconds.items()},
        "stage_share": {stage: round(s / total, 3) for stage, s in seconds.items()},
    }


def _wait(what: str, check: Callable[[], bool], timeout_s: float = _STAGE_TIMEOUT_S) -> float:
    """Polls ``check`` every 0.5 s; the time (epoch seconds) it first held."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)
    return time.time()


def _read_all(kafka: KafkaSettings, topic: str) -> list[bytes]:
    reader = consumer(kafka, f"bench-notes-{uuid.uuid4().hex[:6]}")
    try:
        ends = {p: high for p, (_, high) in topic_watermarks(kafka, topic).items() if high > 0}
        reader.assign([TopicPartition(topic, p, 0) for p in ends])
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while sum(ends.values()) > len(values) and time.monotonic() < deadline:
            values += [m.value() or b"null" for m in reader.consume(1_000, timeout=1.0) if m.error() is None]
        return [v for v in values if v != b"null"]
    finally:
        reader.close()


def _caught_up(source: BenchSource, timeout_s: float = 300.0) -> None:
    """Waits until every walsender (the stack's own connector) has read the WAL of the fill: its decoding
    would otherwise compete with the measured snapshot."""
    with source.connect() as conn:
        row = conn.execute("select pg_current_wal_lsn()").fetchone()
        lsn = row[0] if row else None
        query = "select count(*) from pg_stat_replication where sent_lsn < %s::pg_lsn"

        def read() -> bool:
            behind = conn.execute(query, (lsn,)).fetchone()
            return behind is not None and behind[0] == 0

        _wait("the stack's connector to read the fill", read, timeout_s)


def _contracts(settings: Settings, source: BenchSource, folder: Path) -> TableContract:
    """The repository's contracts (silver's other models refer to them) plus the table's; the table's."""
    folder.mkdir(parents=True)
    for path in settings.writer.contracts_dir.glob("*.avsc"):
        shutil.copy(path, folder / path.name)
    write_contracts(settings.postgres.dsn(), source.schema, folder)
    return next(c for c in load_contracts(folder) if c.schema == source.schema)


def _loaded_rows(loader: ServiceChild) -> int:
    return sum(int(e.get("rows", 0)) for e in loader.events("loader.loaded"))


def run(settings: Settings, rows: int, base: Path) -> dict[str, Any]:
    prefix = f"bsnap{uuid.uuid4().hex[:6]}"
    topic, notes = f"{prefix}.{prefix}.{TABLE}", f"{prefix}.notifications"
    with bench_source(settings, prefix=prefix, schema=prefix) as source:
        source.create_tables([TABLE])
        filled = time.monotonic()
        with source.connect() as conn:
            generate_rows(conn, prefix, TABLE, rows)
            conn.execute(f'analyze "{prefix}"."{TABLE}"')
        fill_s = time.monotonic() - filled
        _caught_up(source)
        contract = _contracts(settings, source, base / "contracts")
        ensure_topics(settings.kafka, [topic, notes])  # the writer's subscription sees the topic at once
        group = f"bench-snapshot-{prefix}"
        env = service_env(
            settings,
            CDCFLOW_KAFKA__TOPIC_PREFIX=prefix,
            CDCFLOW_KAFKA__PRIMARY_PREFIX="",
            CDCFLOW_LAKE__ROOT=str(base / "lake"),
            CDCFLOW_WAREHOUSE__DUCKDB_PATH=str(base / "warehouse.duckdb"),
            CDCFLOW_WRITER__GROUP_ID=group,
            CDCFLOW_WRITER__CONTRACTS_DIR=str(base / "contracts"),
            CDCFLOW_WRITER__STATE_DIR=str(base / "writer-state"),
            CDCFLOW_WRITER__SCHEMA_EVOLUTION="dlq",
            CDCFLOW_LOADER__CONTRACTS_DIR=str(base / "contracts"),
            CDCFLOW_LOADER__INTERVAL_S="2",
            CDCFLOW_TRANSFORM__CONTRACTS_DIR=str(base / "contracts"),
            CDCFLOW_TRANSFORM__WORK_DIR=str(base / "transform"),
        )
        logs = base / "logs"
        writer = ServiceChild("services.consumer", env, logs / "writer.log")
        loader = ServiceChild("services.loader", env, logs / "loader.log")
        silver = model_name(contract)
        transform = ServiceChild(
            "services.transform", env, logs / "transform.log", ["--once", "--select", silver, f"{silver}_history"]
        )
        try:
            writer.start()
            _wait("the writer to start", lambda: bool(writer.events("writer.started")) or not writer.running(), 120)
            if not writer.running():
                raise SystemExit(f"the writer exited: {writer.log_text()[-2000:]}")
            writer_began = cpu_seconds(writer.pid or 0)
            loader.start()
            start = time.time()
            source.register(
                partitions=settings.kafka.topic_partitions, snapshot_mode="initial", notification_topic=notes
            )
            marks = {"debezium": _wait("the snapshot in Kafka", lambda: total_records(settings.kafka, [topic]) >= rows)}
            ends = {(topic, p): high for p, (_, high) in topic_watermarks(settings.kafka, topic).items() if high > 0}
            marks["writer"] = _wait("the writer's commits", lambda: committed_all(settings.kafka, group, ends))
            writer_cpu = cpu_seconds(writer.pid or 0) - writer_began
            marks["loader"] = _wait("bronze", lambda: _loaded_rows(loader) >= rows)
            writer.stop()
            loader.stop()
            transform.start()
            _wait("the transform", lambda: not transform.running())
            marks["dbt"] = time.time()
            if transform.proc is None or transform.proc.returncode != 0:
                raise SystemExit(f"the transform failed: {transform.log_text()[-3000:]}")
            comparison = compare_table(
                contract, PostgresSource(settings.postgres.dsn()), DuckDBSilver(base / "warehouse.duckdb")
            )
            marks["verify"] = time.time()
        finally:
            for child in (transform, loader, writer):
                child.stop()
            drop_group(settings.kafka, group)
        dbz_started, dbz_completed = debezium_window(_read_all(settings.kafka, notes))
        source.close(extra_topics=[notes])
    return _figures(
        rows,
        start,
        marks,
        writer_cpu=writer_cpu,
        debezium=(dbz_started, dbz_completed),
        comparison=comparison,
        fill_s=fill_s,
    )


def _figures(
    rows: int,
    start: float,
    marks: dict[str, float],
    *,
    writer_cpu: float,
    debezium: tuple[float | None, float | None],
    comparison: TableComparison,
    fill_s: float,
) -> dict[str, Any]:
    dbz_s = marks["debezium"] - start
    figures: dict[str, Any] = {
        "benchmark": "snapshot",
        "rows": rows,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **stage_figures(start, marks),
        "debezium_rows_per_s": round(rows / dbz_s),
        "writer_cpu_s": round(writer_cpu, 1),
        "writer_events_per_cpu_s": round(rows / writer_cpu),
        # the CPU the writer needs to keep pace with Debezium's snapshot: cores
        "writer_cores_at_debezium_rate": round(writer_cpu / dbz_s, 3),
        "verify_source_rows": comparison.source_rows,
        "verify_silver_rows": comparison.silver_rows,
        "zero_drift": not comparison.drift,
        "fill_s": round(fill_s, 1),
    }
    started, completed = debezium
    if started is not None and completed is not None:
        figures["debezium_notified_s"] = round(completed - started, 1)
        figures["debezium_notified_start_after_s"] = round(started - start, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    settings = load_settings()
    require_healthy(Stack(settings))
    with tempfile.TemporaryDirectory(prefix="cdcflow-snapshot-bench-") as folder:
        figures = run(settings, args.rows, Path(folder))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
