"""Loader throughput into DuckDB bronze, dedup included, with bronze at 1x and 10x a base size.

The claim under test: the dedup is an index probe per staged row, so the cost of a batch does not grow
with the size of bronze. For each size, bronze is pre-filled with synthetic rows (other partitions'
coordinates, inserted in bulk by SQL), then the same batches are loaded: new files, then the same files
rewritten (every row a duplicate). Prints one JSON line.

    .venv/bin/python -m bench.loader_bench [--base-rows 500000] [--batch-files 10] [--rows-per-file 10000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import duckdb
from prometheus_client import CollectorRegistry

from services.common.lake import LocalLake
from services.common.logging import configure_logging
from services.common.metrics import LoaderMetrics
from services.common.settings import LoaderSettings, LogSettings
from services.common.signals import Shutdown
from services.loader.app import Loader
from services.warehouse.bronze import bronze_table
from services.warehouse.duckdb import DuckDBWarehouse
from tests.fixtures.lakefiles import PREFIX, LakeFiles, lending_contract


def _prefill(warehouse: Path, rows: int) -> None:
    """Bronze rows for partitions 1..5 (the batches use partition 0), as the loader would store them."""
    contract = lending_contract("transactions")
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute(
            f"insert into bronze.{bronze_table(contract)} (transaction_id, customer_id, transaction_type, amount,"  # noqa: S608
            " currency, booked_at, value_date, _op, _is_snapshot, _unavailable_columns, _kafka_topic,"
            " _kafka_partition, _kafka_offset, _ingested_at, _source_ts, _source_lsn, _load_id, _loaded_at, _lake_file)"
            " select i, 1, 'PAYMENT', 10.00, 'USD', now(), current_date, 'c', false, [], ?,"
            " 1 + i % 5, i // 5, now(), now(), i, 'prefill', now(), 'prefill' from range(?) t(i)",
            [f"{PREFIX}.lending.transactions", rows],
        )


def _measure(base: Path, bronze_rows: int, batch_files: int, rows_per_file: int) -> dict[str, float]:
    lake = LocalLake(base / "lake")
    warehouse = DuckDBWarehouse(base / "wh.duckdb")
    contract = lending_contract("transactions")
    warehouse.ensure_bronze(contract)
    _prefill(base / "wh.duckdb", bronze_rows)
    files = LakeFiles(lake, contract)
    hour_us = 3_600_000_000
    for i in range(batch_files):  # one file per hour folder: a batch of ``batch_files`` files
        files.write(range(i * rows_per_file, (i + 1) * rows_per_file), ts_us=1_795_000_000_000_000 + i * hour_us)
    loader = Loader(
        LoaderSettings(max_batch_files=batch_files),
        topic_prefix=PREFIX,
        lake=lake,
        warehouse=warehouse,
        metrics=LoaderMetrics(CollectorRegistry()),
        shutdown=Shutdown(),
    )
    began = time.perf_counter()
    fresh = loader.cycle()
    fresh_s = time.perf_counter() - began
    for path in (base / "lake").rglob("*.parquet"):  # same names, new versions: all duplicates
        path.touch()
        path.write_bytes(path.read_bytes())
    began = time.perf_counter()
    dup = loader.cycle()
    dup_s = time.perf_counter() - began
    if fresh.rows_inserted != batch_files * rows_per_file or dup.duplicates_skipped != batch_files * rows_per_file:
        raise SystemExit(f"the loader lost or doubled rows: new={fresh}, duplicates={dup}")
    rows = batch_files * rows_per_file
    return {
        "bronze_rows": bronze_rows,
        "batch_rows": rows,
        "new_rows_per_s": round(rows / fresh_s),
        "duplicate_rows_per_s": round(rows / dup_s),
        "new_batch_s": round(fresh_s, 3),
        "duplicate_batch_s": round(dup_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-rows", type=int, default=500_000)
    parser.add_argument("--batch-files", type=int, default=10)
    parser.add_argument("--rows-per-file", type=int, default=10_000)
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING"))
    results = []
    for factor in (1, 10):
        with tempfile.TemporaryDirectory(prefix="cdcflow-loader-bench-") as folder:
            results.append(_measure(Path(folder), args.base_rows * factor, args.batch_files, args.rows_per_file))
    small, large = results
    print(
        json.dumps(
            {
                "bronze_1x": small,
                "bronze_10x": large,
                "batch_cost_ratio_10x_vs_1x": round(large["new_batch_s"] / small["new_batch_s"], 2),
                "duplicate_cost_ratio_10x_vs_1x": round(large["duplicate_batch_s"] / small["duplicate_batch_s"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
