"""Many tables, little change: 50 captured tables with a trickle of changes each, beside 5 captured tables.

The tables are copies of the three lending tables under 50 names (``lending.customers``, ``lending.facilities``,
``lending.transactions``, then ``lending.customers_03``, ``lending.facilities_04``, …), each with a small history
in the lake: 6 partitions, 2 files of 5 rows per partition, laid down in the writer's layout by its decoder and
Parquet sink. Everything reaches bronze through the real loader and silver through the real transform, on a
local lake and a DuckDB file in a temporary folder. The same run measures 5 captured tables the same way (the
first five of the same list), each size from a fresh folder:

- **loader** (``cdcflow load``, its defaults: archiving off, the DuckDB file opened per call): the first cycle,
  five cycles with nothing new, and five cycles each after 1, 5 and every table gained one file (medians,
  wall and CPU seconds of the process, DuckDB's threads included);
- **transform**: ``cdcflow transform --once`` (one ``dbt build`` of every model and test: what a new user runs),
  then the loader with the transform beside it (``CDCFLOW_LOADER__WITH_TRANSFORM``: the database held open, the
  loader telling the transform which tables gained rows) doing a cycle and a silver step after 1 (twice: the
  first step parses the project) and 5 tables changed. A step must build exactly the two silver models of each
  changed table, or the run fails;
- **files per table-hour**: the writer's flush code (:class:`~services.consumer.buffers.FlushPolicy` on
  :class:`~services.consumer.buffers.PartitionBuffer`, the Parquet sink) driven on a simulated clock through one
  hour of a trickle — one change per table every ``--trickle-every`` seconds, spread over the topic's
  partitions by key, polled every ``poll_timeout_s`` — beside the minimum the policy needs, one file per
  ``flush_max_age_s`` per table: with the default 6 partitions per topic and with 1.

Prints one JSON line.

    .venv/bin/python -m bench.many_tables_bench [--tables 50] [--baseline-tables 5] [--trickle-every 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from prometheus_client import CollectorRegistry

from bench.lake_scale_bench import Timed, UnsyncedLake, bench_loader, median, timed_cycle
from services.common.contracts import TableContract, load_contracts
from services.common.contracts.store import write_contract
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.kafka.message_columns import MessageBatch
from services.common.lake import Lake, LakeLayout, LocalLake
from services.common.logging import configure_logging
from services.common.settings import LoaderSettings, LogSettings, Settings, WriterSettings, load_settings, repo_root
from services.common.signals import Shutdown
from services.consumer.buffers import FlushPolicy, PartitionBuffer
from services.consumer.sink import ParquetSink
from services.transform.app import StepReport, silver_models
from services.transform.changes import ChangedTables
from services.transform.wiring import run_transform, transformer_for
from services.warehouse.duckdb import DuckDBWarehouse
from tests.fixtures.lakefiles import (
    PREFIX,
    LakeFiles,
    customer_event,
    facility_event,
    lending_contract,
    transaction_event,
)

__all__ = [
    "PARTITIONS",
    "ChangeLog",
    "Trickle",
    "goals",
    "table_contracts",
    "trickle_files",
]

SHAPES = ("customers", "facilities", "transactions")
PARTITIONS = 6
HISTORY_FILES = 2  # per partition
ROWS_PER_FILE = 5
CYCLES = 5  # timed cycles of each kind (the median is reported)
_PARTITION_SPAN = 10_000_000  # a partition's offsets (and so its keys) start at partition times this
_BASE_US = 1_795_000_000_000_000 - 1_795_000_000_000_000 % 3_600_000_000  # on an hour
_COST_GOAL = 1.5  # a cycle with k tables changed, 50 captured against 5 captured


def table_contracts(count: int) -> list[TableContract]:
    """``count`` captured tables: the three lending tables, then copies of them in turn under new names."""
    contracts = []
    for index in range(count):
        shape = SHAPES[index % len(SHAPES)]
        name = shape if index < len(SHAPES) else f"{shape}_{index:02d}"
        contracts.append(replace(lending_contract(shape), table=name))
    return contracts


def _write_contracts(folder: Path, contracts: Sequence[TableContract]) -> Path:
    """The captured tables' contracts, and the repository's tables cdcflow produces (gold reads their silver)."""
    produced = [c for c in load_contracts(repo_root() / "schemas") if c.produced_by]
    for contract in [*contracts, *produced]:
        write_contract(folder, contract)
    return folder


def _transaction(transaction_id: int, ts_us: int) -> bytes:
    return transaction_event(transaction_id, ts_us=ts_us)


_EVENTS: dict[str, Callable[[int, int], bytes]] = {
    "customers": customer_event,
    "facilities": facility_event,
    "transactions": _transaction,
}


def _shape(contract: TableContract) -> str:
    return contract.table.rsplit("_", 1)[0] if contract.table not in SHAPES else contract.table


@dataclass(slots=True)
class ChangeLog:
    """Lays down a table's lake files as the writer would: the ``nth`` file of a partition holds that
    partition's next ``ROWS_PER_FILE`` offsets (new keys: inserts), one minute after the one before."""

    lake: Lake
    written: Counter[tuple[str, int]]

    def write(self, contract: TableContract, partition: int) -> None:
        nth = self.written[(contract.table, partition)]
        files = LakeFiles(self.lake, contract, partition=partition, event=_EVENTS[_shape(contract)])
        first = partition * _PARTITION_SPAN + nth * ROWS_PER_FILE
        files.write(range(first, first + ROWS_PER_FILE), ts_us=_BASE_US + nth * 60_000_000)
        self.written[(contract.table, partition)] += 1

    def change(self, contract: TableContract) -> None:
        """A trickle's flush: one new file of the table, its partitions in turn."""
        changes = sum(n for (table, _), n in self.written.items() if table == contract.table)
        self.write(contract, changes % PARTITIONS)


# --- the loader ------------------------------------------------------------------------------------


def _checked(timed: Timed, files: int, what: str) -> Timed:
    if timed.report.files != files or timed.report.stopped_tables or timed.report.failed_files:
        raise SystemExit(f"{what}: expected {files} files loaded, the cycle reported {timed.report}")
    return timed


def loader_figures(base: Path, contracts: Sequence[TableContract], contracts_dir: Path) -> dict[str, float]:
    """The loader's cycles over a fresh lake of ``contracts``' histories (module docstring)."""
    log = ChangeLog(LocalLake(base / "lake"), Counter())
    for contract in contracts:
        for partition in range(PARTITIONS):
            for _ in range(HISTORY_FILES):
                log.write(contract, partition)
    loader = bench_loader(base, LoaderSettings(contracts_dir=contracts_dir))
    history = len(contracts) * PARTITIONS * HISTORY_FILES
    first = _checked(timed_cycle(loader), history, "the first cycle")
    idle = [_checked(timed_cycle(loader), 0, "a cycle with nothing new") for _ in range(CYCLES)]
    figures = {
        "captured_tables": len(contracts),
        "history_files": history,
        "first_cycle_s": round(first.wall_s, 2),
        "idle_cycle_s": median(c.wall_s for c in idle),
        "idle_cycle_cpu_s": median(c.cpu_s for c in idle),
    }
    for changed in sorted({1, 5, len(contracts)}):
        cycles = []
        for _ in range(CYCLES):
            for contract in contracts[:changed]:
                log.change(contract)
            cycles.append(_checked(timed_cycle(loader), changed, f"a cycle after {changed} tables changed"))
        figures[f"changed_{changed}_cycle_s"] = median(c.wall_s for c in cycles)
        figures[f"changed_{changed}_cycle_cpu_s"] = median(c.cpu_s for c in cycles)
    return figures


# --- the transform ---------------------------------------------------------------------------------


def _settings(base: Path, contracts_dir: Path) -> Settings:
    return load_settings(
        {
            "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(base / "wh.duckdb"),
            "CDCFLOW_LAKE__ROOT": str(base / "lake"),
            "CDCFLOW_LOADER__CONTRACTS_DIR": str(contracts_dir),
            "CDCFLOW_TRANSFORM__CONTRACTS_DIR": str(contracts_dir),
            "CDCFLOW_TRANSFORM__WORK_DIR": str(base / "transform"),
            "CDCFLOW_TRANSFORM__HEALTH_PORT": "0",
            "CDCFLOW_LOADER__WITH_TRANSFORM": "true",
        }
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def full_build(settings: Settings) -> dict[str, Any]:
    """``cdcflow transform --once``: one ``dbt build`` of everything, in a fresh work folder (parse included)."""
    wall, cpu = time.perf_counter(), _cpu_s()
    code = run_transform(settings, Shutdown(), once=True)
    figures: dict[str, Any] = {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(_cpu_s() - cpu, 1)}
    results = json.loads((Path(settings.transform.work_dir) / "target" / "run_results.json").read_text())
    statuses = Counter(f"{r['unique_id'].split('.')[0]}.{r['status']}" for r in results["results"])
    figures["nodes"] = dict(sorted(statuses.items()))
    if code != 0:
        raise SystemExit(f"the full build failed: {figures['nodes']}; see {settings.transform.work_dir}/logs")
    return figures


def silver_steps(base: Path, settings: Settings, contracts: Sequence[TableContract]) -> dict[str, Any]:
    """The loader with the transform beside it: after its first cycle, a cycle and a silver step with nothing
    new, then after 1, 1 again and 5 tables changed; each step must build exactly the silver models of the
    changed tables."""
    log = ChangeLog(LocalLake(base / "lake"), _written(LocalLake(base / "lake")))
    changes = ChangedTables()
    figures: dict[str, Any] = {}
    with DuckDBWarehouse(settings.duckdb_path()).session():  # as beside the loader: one instance for both
        loader = bench_loader(base, LoaderSettings(contracts_dir=settings.loader.contracts_dir), on_loaded=changes.add)
        transformer = transformer_for(
            settings,
            Shutdown(),
            lake=LocalLake(base / "lake"),
            warehouse=DuckDBWarehouse(settings.duckdb_path()),
            registry=CollectorRegistry(),
            interval_s=settings.transform.interval_s,
            silver_every_s=settings.loader.interval_s,
            changed=changes.take,
        )
        first = _checked(timed_cycle(loader), 0, "the first cycle beside the transform")  # reads every manifest once
        figures["first_loader_cycle_s"] = round(first.wall_s, 3)
        for label, changed in (("nothing", 0), ("1_first", 1), ("1", 1), ("5", 5)):
            for contract in contracts[:changed]:
                log.change(contract)
            cycle = _checked(timed_cycle(loader), changed, f"the loader beside the transform, {changed} changed")
            wall, cpu = time.perf_counter(), _cpu_s()
            step = transformer.silver_step()
            step_s, step_cpu_s = time.perf_counter() - wall, _cpu_s() - cpu
            _check_step(step, contracts, contracts[:changed])
            figures[f"changed_{label}"] = {
                "loader_cycle_s": round(cycle.wall_s, 3),
                "loader_cycle_cpu_s": round(cycle.cpu_s, 3),
                "step_s": round(step_s, 3),
                "step_cpu_s": round(step_cpu_s, 3),
                "models_built": len(step.build.nodes) if step is not None and step.build is not None else 0,
            }
    return figures


def _written(lake: Lake) -> Counter[tuple[str, int]]:
    """Files already in the lake, per table and partition (a ChangeLog goes on after them)."""
    slots = [LakeLayout.parse(f.path) for f in lake.list(f"{PREFIX}/") if f.path.endswith(".parquet")]
    return Counter((s.qualified_table.split(".", 1)[1], s.partition) for s in slots)


def _check_step(step: StepReport | None, everything: Sequence[TableContract], changed: Sequence[TableContract]) -> None:
    """The step built the silver of the changed tables and nothing else (none at all when none changed)."""
    if not changed:
        if step is not None:
            raise SystemExit(f"a silver step ran with no table changed: {step}")
        return
    wanted = sorted(c.full_name for c in changed)
    if step is None or step.status != "success" or step.build is None or step.tables != wanted:
        raise SystemExit(f"the silver step after {wanted} changed: {step}")
    built = sorted(n.name for n in step.build.nodes if n.status == "success")
    models = sorted(silver_models(everything, wanted))
    if built != models or len(step.build.nodes) != len(models):
        raise SystemExit(f"the silver step built {built}, not the changed tables' models {models}")


# --- files per table-hour --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trickle:
    """One change per table every ``every_s`` seconds for ``hours``, over ``partitions`` partitions a topic."""

    tables: int
    partitions: int
    every_s: float
    hours: int = 1

    def changes(self) -> Iterator[tuple[float, int, int]]:
        """``(seconds since the start, table, key)`` in time order; the tables' changes are evenly staggered."""
        per_table = int(self.hours * 3600 / self.every_s)
        for n in range(per_table):
            for table in range(self.tables):
                yield n * self.every_s + table * self.every_s / self.tables, table, n

    def partition(self, key: int) -> int:
        """Kafka's choice by key hash: a table's changes spread over its partitions."""
        return zlib.crc32(str(key).encode()) % self.partitions


class _Clock:
    """The simulated clock of the writer's buffers."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def trickle_files(lake: Lake, trickle: Trickle, writer: WriterSettings) -> dict[str, float]:
    """Drive the writer's flush policy, buffers and sink through ``trickle`` on a simulated clock: every
    ``poll_timeout_s`` a poll takes the changes that arrived, then every buffer the policy finds due is
    written and starts over (a checkpoint); at the end, every buffer is flushed (shutdown). Returns the files
    and rows per table-hour beside the minimum the policy needs."""
    policy = FlushPolicy(writer.flush_max_rows, writer.flush_max_bytes, writer.flush_max_age_s)
    contract = lending_contract("transactions")
    sink = ParquetSink(lake, PREFIX)
    clock = _Clock()
    held: dict[tuple[int, int], PartitionBuffer] = {}
    offsets: Counter[tuple[int, int]] = Counter()
    pending = list(trickle.changes())
    due_at = 0
    while due_at < len(pending) or any(b.pending for b in held.values()):
        clock.now += writer.poll_timeout_s
        while due_at < len(pending) and pending[due_at][0] <= clock.now:
            _, table, key = pending[due_at]
            tp = (table, trickle.partition(key))
            buffer = held.setdefault(
                tp, PartitionBuffer(str(table), tp[1], 0, 0, opened_at=clock.now, clock=clock.monotonic)
            )
            buffer.add(_row(contract, tp, offsets[tp], clock.now), offsets[tp] + 1)
            offsets[tp] += 1
            due_at += 1
        ended = due_at >= len(pending)
        for (table, partition), buffer in held.items():
            if buffer.pending and (ended or policy.due(buffer, clock.now)):
                rows = buffer.take()
                assert rows is not None
                sink.write(contract.schema, f"t{table:02d}", partition, rows)
                buffer.committed()
    files = [f for f in lake.list(f"{PREFIX}/") if f.path.endswith(".parquet")]
    table_hours = trickle.tables * trickle.hours
    changes = trickle.tables * int(trickle.hours * 3600 / trickle.every_s)
    return {
        "partitions_per_topic": trickle.partitions,
        "change_every_s": trickle.every_s,
        "files_per_table_hour": round(len(files) / table_hours, 1),
        "rows_per_file": round(changes / len(files), 2),
        "minimum_files_per_table_hour": round(3600 / writer.flush_max_age_s, 1),
        "vs_minimum": round(len(files) / table_hours / (3600 / writer.flush_max_age_s), 2),
    }


def _row(contract: TableContract, tp: tuple[int, int], offset: int, now: float) -> pa.Table:
    """One change decoded by the writer's decoder (keyed by its table and partition so keys never collide)."""
    topic = f"{PREFIX}.{contract.schema}.{contract.table}"
    ts_us = _BASE_US + int(now * 1e6)
    key = tp[1] * _PARTITION_SPAN + offset
    message = Message(
        topic=topic,
        partition=tp[1],
        offset=offset,
        key=json.dumps({"transaction_id": key}).encode(),
        value=transaction_event(key, ts_us=ts_us),
        timestamp=(TIMESTAMP_CREATE_TIME, ts_us // 1000),
    )
    result = JsonEventDecoder(contract).decode(topic, MessageBatch.of([message]), ingested_at_us=ts_us)
    if result.failures:
        raise SystemExit(f"the decoder refused the bench's event: {result.failures}")
    return result.rows


# --- the run ---------------------------------------------------------------------------------------


def _ratio(mine: float, theirs: float) -> float:
    return round(mine / max(theirs, 1e-6), 2)


def goals(
    loader: dict[str, dict[str, float]], transform: dict[str, dict[str, Any]], tables: int, baseline: int
) -> dict[str, Any]:
    """The issue's goals: a loader cycle with nothing new under 1 s, and the cost of a loader cycle and of a
    silver step following the tables that changed — each changed count at ``tables`` captured tables against
    the same at ``baseline`` (CPU seconds; at most :data:`_COST_GOAL` times)."""
    many, few = loader[str(tables)], loader[str(baseline)]
    steps, few_steps = transform[str(tables)]["silver_steps"], transform[str(baseline)]["silver_steps"]
    standalone = {
        f"changed_{k}": _ratio(many[f"changed_{k}_cycle_cpu_s"], few[f"changed_{k}_cycle_cpu_s"]) for k in (1, 5)
    }
    beside = {
        f"changed_{k}": _ratio(
            steps[f"changed_{k}"]["loader_cycle_cpu_s"], few_steps[f"changed_{k}"]["loader_cycle_cpu_s"]
        )
        for k in (1, 5)
    }
    step = {
        f"changed_{k}": _ratio(steps[f"changed_{k}"]["step_cpu_s"], few_steps[f"changed_{k}"]["step_cpu_s"])
        for k in (1, 5)
    }
    return {
        "idle_cycle_under_1s": many["idle_cycle_s"] < 1.0,
        "idle_cycle_cpu_vs_baseline": _ratio(many["idle_cycle_cpu_s"], few["idle_cycle_cpu_s"]),
        "loader_cpu_vs_baseline": standalone,
        "loader_cost_follows_changed_tables": all(r <= _COST_GOAL for r in standalone.values()),
        "loader_beside_transform_cpu_vs_baseline": beside,
        "loader_beside_transform_follows_changed_tables": all(r <= _COST_GOAL for r in beside.values()),
        "silver_step_cpu_vs_baseline": step,
        "silver_step_follows_changed_tables": all(r <= _COST_GOAL for r in step.values()),
        "all_changed_vs_one_changed": _ratio(many[f"changed_{tables}_cycle_cpu_s"], many["changed_1_cycle_cpu_s"]),
        "full_build_vs_one_table_step": _ratio(
            transform[str(tables)]["full_build"]["wall_s"], steps["changed_1"]["step_s"]
        ),
    }


def _transform(base: Path, contracts: Sequence[TableContract], contracts_dir: Path) -> dict[str, Any]:
    settings = _settings(base, contracts_dir)
    return {"full_build": full_build(settings), "silver_steps": silver_steps(base, settings, contracts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=50, help="captured tables")
    parser.add_argument("--baseline-tables", type=int, default=5, help="captured tables of the baseline")
    parser.add_argument("--trickle-every", type=float, default=5.0, help="seconds between a table's changes")
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING", format="json"))
    loader: dict[str, dict[str, float]] = {}
    transform: dict[str, dict[str, Any]] = {}
    for tables in (args.baseline_tables, args.tables):
        contracts = table_contracts(tables)
        with tempfile.TemporaryDirectory(prefix="cdcflow-tables-bench-") as folder:
            base = Path(folder)
            contracts_dir = _write_contracts(base / "contracts", contracts)
            loader[str(tables)] = loader_figures(base, contracts, contracts_dir)
            print(f"loader, {tables} tables: {loader[str(tables)]}", file=sys.stderr, flush=True)
            transform[str(tables)] = _transform(base, contracts, contracts_dir)
            print(f"transform, {tables} tables: {transform[str(tables)]}", file=sys.stderr, flush=True)
    files: dict[str, dict[str, float]] = {}
    for partitions in (PARTITIONS, 1):
        with tempfile.TemporaryDirectory(prefix="cdcflow-tables-bench-") as folder:
            trickle = Trickle(args.tables, partitions, args.trickle_every)
            files[f"{partitions}_partitions"] = trickle_files(UnsyncedLake(Path(folder)), trickle, WriterSettings())
        print(f"files, {partitions} partitions: {files[f'{partitions}_partitions']}", file=sys.stderr, flush=True)
    figures = {
        "benchmark": "many_tables",
        "loader": loader,
        "transform": transform,
        "files": files,
        "goals": goals(loader, transform, args.tables, args.baseline_tables),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
