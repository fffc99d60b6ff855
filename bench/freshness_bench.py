"""Freshness: from the PostgreSQL commit of a change to its visibility in bronze and in silver.

At a steady source rate (the seeded workload on the local stack), the lake writer, the loader and, unless
``--transform-every 0``, the transform run as child processes — as they would be deployed — with a group,
lake and DuckDB file of their own; the group starts at the current end of every captured topic, so only the
changes of this run are measured. After a warm-up, every row change committed in the measured window is
timed:

- **commit**: ``_source_ts`` of its bronze row, Debezium's ``source.ts_ms`` — PostgreSQL's commit time;
- **bronze**: the ``loader.loaded`` log line of the load that inserted it (``_load_id``), written right after
  the load's transaction committed;
- **silver**: the end of the first successful transform run (its ``transform.run`` log line), or silver step
  of the row's table (``transform.silver_step`` with ``--silver-every``), that began after that load. A run or
  step reads bronze as of its start; its end (for a full run: silver, gold and every test built) is an upper
  bound of the moment silver showed the row.

``--transform-in-loader`` runs the transform inside the loader's process (``CDCFLOW_LOADER__WITH_TRANSFORM``)
instead of as a process of its own, so loads and dbt share the DuckDB file instead of taking turns at its lock.

Prints one JSON line with p50/p95/p99 of each, the measured source rate and the settings used.

    .venv/bin/python -m bench.freshness_bench [--rate 700] [--seconds 120] [--transform-every 60]
        [--silver-every 2 --transform-in-loader]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from services.common.kafka import TopicPartition, admin_client, consumer, end_positions
from services.common.settings import Settings, load_settings
from services.stack.children import ServiceChild, service_env
from services.stack.runtime import Stack, require_healthy
from services.stack.workload import Workload, WorkloadResult
from services.transform.wiring import work_dir

_MARGIN_S = 3.0  # the target: bronze p95 <= writer max batch age + loader interval + this


def _epoch(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def _start_at_the_end(settings: Settings) -> int:
    """Commit the current end of every topic under the prefix for the benchmark's group; the partitions."""
    prefix = f"{settings.kafka.topic_prefix}."
    topics = [t for t in admin_client(settings.kafka).list_topics(timeout=30).topics if t.startswith(prefix)]
    client = consumer(settings.kafka, settings.writer.group_id)
    try:
        ends = [TopicPartition(p.topic, p.partition, max(p.offset, 0)) for p in end_positions(client, topics)]
        client.commit(offsets=ends, asynchronous=False)
        return len(ends)
    finally:
        client.close()


def _drained(settings: Settings) -> bool:
    prefix = f"{settings.kafka.topic_prefix}."
    client = consumer(settings.kafka, settings.writer.group_id)
    try:
        topics = [t for t in client.list_topics(timeout=10).topics if t.startswith(prefix)]
        ends = {(p.topic, p.partition): p.offset for p in end_positions(client, topics) if p.offset > 0}
        committed = client.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
        return all(c.offset >= ends[(c.topic, c.partition)] for c in committed)
    finally:
        client.close()


def _loaded_all(loader: ServiceChild, since: float) -> bool:
    """A loader cycle after ``since`` found nothing to load (and did not skip work because DuckDB was busy)."""
    lines = [(_epoch(e), "busy") for e in loader.events("loader.warehouse_busy")]
    lines += [(_epoch(e), "idle" if not e.get("files") else "loaded") for e in loader.events("loader.cycle")]
    busy = False
    for at, kind in sorted(lines):
        if kind == "busy":
            busy = True
            continue
        if kind == "idle" and not busy and at > since:
            return True
        busy = False
    return False


def _wait(what: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1.0)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p95, p99 = np.percentile(np.array(values), [50, 95, 99])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(max(values), 2),
    }


def run(
    *,
    rate: float,
    seconds: float,
    warmup_s: float,
    flush_age_s: float,
    loader_s: float,
    transform_s: float,
    silver_s: float = 0.0,
    in_loader: bool = False,
) -> dict[str, Any]:
    base_settings = load_settings()
    require_healthy(Stack(base_settings))
    base = Path(tempfile.mkdtemp(prefix="cdcflow-freshness-"))
    settings = base_settings.model_copy(
        update={
            "lake": base_settings.lake.model_copy(update={"root": str(base / "lake")}),
            "warehouse": base_settings.warehouse.model_copy(update={"duckdb_path": str(base / "warehouse.duckdb")}),
            "writer": base_settings.writer.model_copy(update={"group_id": f"bench-freshness-{uuid.uuid4().hex[:8]}"}),
            "transform": base_settings.transform.model_copy(update={"work_dir": str(base / "transform")}),
        }
    )
    partitions = _start_at_the_end(settings)
    env = service_env(
        settings,
        CDCFLOW_WRITER__FLUSH_MAX_AGE_S=str(flush_age_s),
        CDCFLOW_LOADER__INTERVAL_S=str(loader_s),
        CDCFLOW_TRANSFORM__WORK_DIR=str(work_dir(settings)),
        CDCFLOW_TRANSFORM__SILVER_EVERY_S=str(silver_s),
        CDCFLOW_TRANSFORM__INTERVAL_S=str(transform_s or 300),
        CDCFLOW_LOADER__WITH_TRANSFORM=str(bool(transform_s and in_loader)).lower(),
    )
    logs = base / "logs"
    writer = ServiceChild("services.consumer", env, logs / "writer.log")
    loader = ServiceChild("services.loader", env, logs / "loader.log")
    transform = ServiceChild("services.transform", env, logs / "transform.log", ["--every", str(transform_s)])
    children = [writer, loader, *([transform] if transform_s and not in_loader else [])]
    runner = loader if in_loader else transform  # the process whose log holds the transform's lines
    result = WorkloadResult()
    try:
        for child in children:
            child.start()
        _wait("the writer to join its group", lambda: bool(writer.events("writer.assigned")), 120)
        if transform_s:  # the first run renders the project and builds everything: not a steady-state run
            _wait("the first transform run", lambda: bool(runner.events("transform.run")), 300)

        def drive() -> None:
            result.operations = Workload(settings.postgres, seed=4242).run(rate, warmup_s + seconds).operations

        began = time.time()
        thread = threading.Thread(target=drive, name="workload")
        thread.start()
        thread.join()
        ended = time.time()
        _wait("the writer to commit every change", lambda: _drained(settings), 300)
        drained_at = time.time()
        writer.stop()  # everything is flushed and committed: the lake holds every change
        _wait("the loader to load every file", lambda: _loaded_all(loader, drained_at), 300)
        loaded_at = time.time()
        if transform_s and silver_s:  # the steps after the last loads; rows no step covered are not timed
            time.sleep(silver_s + 15)
        elif transform_s:
            _wait(
                "a transform run after the last load",
                lambda: any(
                    _epoch(e) - float(e["seconds"]) > loaded_at and e["status"] == "success"
                    for e in runner.events("transform.run")
                ),
                transform_s + 600,
            )
    finally:
        for child in reversed(children):
            child.stop()
    return _measure(
        settings,
        loader,
        runner if transform_s else None,
        window=(began + warmup_s, ended),
        config={
            "rate_ops_per_s": rate,
            "seconds": seconds,
            "warmup_s": warmup_s,
            "writer_flush_max_age_s": flush_age_s,
            "loader_interval_s": loader_s,
            "transform_every_s": transform_s or None,
            "silver_every_s": silver_s or None,
            "transform_in_loader": bool(transform_s and in_loader),
            "partitions": partitions,
            "workload_ops": sum(result.operations.values()),
        },
        base=base,
    )


def _measure(
    settings: Settings,
    loader: ServiceChild,
    transform: ServiceChild | None,
    *,
    window: tuple[float, float],
    config: dict[str, Any],
    base: Path,
) -> dict[str, Any]:
    loads = {str(e["load_id"]): _epoch(e) for e in loader.events("loader.loaded")}
    runs = sorted(
        (_epoch(e) - float(e["seconds"]), _epoch(e))
        for e in (transform.events("transform.run") if transform else [])
        if e["status"] == "success"
    )
    # (start, end, tables): a full run covers every table (None), a silver step the tables it names
    covers = sorted(
        [(start, end, None) for start, end in runs]
        + [
            (_epoch(e) - float(e["seconds"]), _epoch(e), frozenset(e["tables"]))
            for e in (transform.events("transform.silver_step") if transform else [])
            if e["status"] == "success"
        ],
        key=lambda c: c[0],
    )
    low_us, high_us = int(window[0] * 1e6), int(window[1] * 1e6)
    with duckdb.connect(str(settings.duckdb_path()), read_only=True) as conn:
        tables = [
            str(t)
            for (t,) in conn.execute(
                "select table_name from information_schema.tables where table_schema = 'bronze'"
                " and table_name like 'lending__%'"
            ).fetchall()
        ]
        rows = [
            (int(ts), str(load_id), table.replace("__", ".", 1))  # lending__customers: lending.customers
            for table in tables
            for ts, load_id in conn.execute(
                f'select epoch_us(_source_ts), _load_id from bronze."{table}"'  # noqa: S608
                " where epoch_us(_source_ts) between ? and ?",
                [low_us, high_us],
            ).fetchall()
        ]
    bronze: list[float] = []
    silver: list[float] = []
    starts = [start for start, _, _ in covers]
    for source_us, load_id, table in rows:
        committed = source_us / 1e6
        loaded = loads[load_id]
        bronze.append(loaded - committed)
        ends = (
            end for _, end, names in covers[int(np.searchsorted(starts, loaded)) :] if names is None or table in names
        )
        end = next(ends, None)
        if end is not None:
            silver.append(end - committed)
    target = config["writer_flush_max_age_s"] + config["loader_interval_s"] + _MARGIN_S
    measured = _percentiles(bronze)
    return {
        "benchmark": "freshness",
        **config,
        "row_changes": len(rows),
        "row_changes_per_s": round(len(rows) / (window[1] - window[0]), 1),
        "bronze_s": measured,
        "silver_s": _percentiles(silver),
        "silver_rows_timed": len(silver),
        "transform_runs": len(runs),
        "silver_steps": len(covers) - len(runs),
        "transform_run_s": _percentiles([end - start for start, end in runs]),
        "bronze_p95_target_s": target,
        "bronze_p95_met": bool(measured) and measured["p95"] <= target,
        "work_dir": str(base),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.freshness_bench", description=__doc__)
    parser.add_argument("--rate", type=float, default=700.0, help="workload operations per second")
    parser.add_argument("--seconds", type=float, default=120.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the window")
    parser.add_argument("--flush-max-age", type=float, default=2.0, help="CDCFLOW_WRITER__FLUSH_MAX_AGE_S")
    parser.add_argument("--loader-every", type=float, default=2.0, help="CDCFLOW_LOADER__INTERVAL_S")
    parser.add_argument("--transform-every", type=float, default=60.0, help="0: no transform (bronze only)")
    parser.add_argument("--silver-every", type=float, default=0.0, help="CDCFLOW_TRANSFORM__SILVER_EVERY_S")
    parser.add_argument(
        "--transform-in-loader", action="store_true", help="the transform in the loader's process (one DuckDB owner)"
    )
    args = parser.parse_args()
    report = run(
        rate=args.rate,
        seconds=args.seconds,
        warmup_s=args.warmup,
        flush_age_s=args.flush_max_age,
        loader_s=args.loader_every,
        transform_s=args.transform_every,
        silver_s=args.silver_every,
        in_loader=args.transform_in_loader,
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
