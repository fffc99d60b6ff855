"""An incremental silver run after a 1% change, beside a full refresh of the same data.

Bronze is filled in bulk by SQL with synthetic lending history (every key inserted, then updated; values
that satisfy the schema's checks), silver is built once, then a fraction of the keys (1% by default) gets a
new version — updates, and a few deletes — loaded later than everything silver holds. That database is
copied, and on the two identical copies the same selection runs once incrementally and once with
``--full-refresh``: the full refresh is the baseline of the same run. Both must produce the same silver,
row for row, or the figures mean nothing and the benchmark fails. Tests are left out of the timed runs:
they read whole tables either way. ``--backfilled`` adds a backfill's read of every key (no LSN) before silver
is first built, its versions spread over the topic's partitions: the most a read costs silver. Prints one JSON
line.

    .venv/bin/python -m bench.transform_bench [--customers 50000] [--change 0.01] [--select silver] [--backfilled]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from services.common.contracts import load_contracts
from services.common.logging import configure_logging
from services.common.settings import LogSettings, Settings, load_settings, repo_root
from services.common.signals import Shutdown
from services.transform.wiring import run_transform
from services.warehouse.duckdb import DuckDBWarehouse

_METADATA = (
    "_op, _source_ts, _source_lsn, _source_txid, _is_snapshot, _unavailable_columns, _kafka_topic,"
    " _kafka_partition, _kafka_offset, _kafka_timestamp, _ingested_at, _loaded_at, _load_id, _lake_file"
)
_TABLE_FILL = {
    "customers": (
        "customer_id, external_ref, full_name, email, status, customer_type, date_of_birth, credit_limit,"
        " profile, notes, created_at, updated_at",
        "k, 'EXT-' || k, 'Customer ' || k, 'c' || k || '@example.com',"
        " ['ACTIVE', 'INACTIVE', 'SUSPENDED'][1 + (k + v) % 3], ['INDIVIDUAL', 'BUSINESS'][1 + k % 2],"
        " date '1960-01-01' + (k % 15000)::int, ((k % 9000) + 1000 + v)::decimal(20, 2),"
        " '{\"segment\": \"' || k % 7 || '\"}', repeat('note ', 40), ts, ts",
    ),
    "facilities": (
        "facility_id, customer_id, facility_type, principal_amount, outstanding_balance, interest_rate, status,"
        " originated_on, maturity_date, last_reviewed_at, created_at, updated_at",
        "k, 1 + k % {customers}, ['TERM_LOAN', 'REVOLVING', 'MORTGAGE'][1 + k % 3],"
        " ((k % 90000) + 10000)::decimal(20, 2), ((k % 9000) + 1000 - v * 10)::decimal(20, 2),"
        " ((k % 900) / 10000 + 0.01)::decimal(7, 4), ['PENDING', 'ACTIVE', 'CLOSED', 'DEFAULTED'][1 + (k + v) % 4],"
        " date '2020-01-01' + (k % 1500)::int, date '2030-01-01' + (k % 1500)::int, ts::timestamp, ts, ts",
    ),
    "transactions": (
        "transaction_id, facility_id, customer_id, transaction_type, amount, currency, exchange_rate, booked_at,"
        " value_date, reference",
        "k, 1 + k % {facilities}, 1 + k % {customers},"
        " ['DEPOSIT', 'WITHDRAWAL', 'DISBURSAL', 'PAYMENT'][1 + k % 4], ((k % 5000) + 1 + v)::decimal(20, 2),"
        " 'USD', '1.' || (k % 1000), ts, ts::date, 'REF-' || k",
    ),
}


def _sized(expressions: str, sizes: dict[str, int]) -> str:
    """References to another table's keys (``{customers}``) take that table's size."""
    for table, size in sizes.items():
        expressions = expressions.replace(f"{{{table}}}", str(size))
    return expressions


def _fill(path: Path, table: str, keys: int, sizes: dict[str, int], *, versions: int, ops: str, after: int) -> int:
    """``versions`` versions of ``keys`` keys, spread evenly over the table's key space.

    ``ops`` is the operation of the first version and of the later ones (``cu``: inserted, then updated);
    ``after`` shifts LSNs, offsets and times past every row already in bronze.
    """
    columns, values = _TABLE_FILL[table]
    first_op, later_op = ops[0], ops[1]
    stride = max(1, sizes[table] // keys)
    sql = f"""
        insert into bronze.lending__{table} ({columns}, {_METADATA})
        select {_sized(values, sizes)},
               case when v = 0 then ? else ? end, ts, ? + n, ? + n, false, [], 'bench.lending.{table}',
               (n % 6)::int, ? + n, ts, ts, ts, 'bench', 'bench'
          from (select 1 + (i % ?) * ? as k, i // ? as v, i as n,
                       timestamptz '2026-01-01 00:00:00+00' + interval 1 second * (? + i) as ts
                  from range(?) t(i))
    """  # noqa: S608 - table names come from the fixed list above
    with duckdb.connect(str(path)) as conn:
        conn.execute(sql, [first_op, later_op, after, after, after, keys, stride, keys, after, keys * versions])
    return keys * versions


def _silver(path: Path, tables: list[str]) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return {t: int(conn.execute(f"select count(*) from silver.{t}").fetchone()[0]) for t in tables}  # type: ignore[index]  # noqa: S608


def _same_silver(left: Path, right: Path, tables: list[str]) -> bool:
    with duckdb.connect(str(left), read_only=True) as conn:
        conn.execute(f"attach '{right}' as other (read_only)")
        for table in tables:
            for a, b in ((f"silver.{table}", f"other.silver.{table}"), (f"other.silver.{table}", f"silver.{table}")):
                # _loaded_at is the incremental watermark: equal by construction, compared like any column
                found = conn.execute(f"select count(*) from (from {a} except all from {b})").fetchone()  # noqa: S608
                if found is None or found[0]:
                    return False
    return True


def _timed_run(settings: Settings, *, full_refresh: bool, select: list[str]) -> dict[str, float]:
    exclude = ["resource_type:test", "resource_type:unit_test"]
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    code = run_transform(settings, Shutdown(), once=True, select=select, exclude=exclude, full_refresh=full_refresh)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    if code != 0:
        raise SystemExit(f"dbt failed (full_refresh={full_refresh}); see {settings.transform.work_dir}/logs")
    return {"wall_s": round(wall, 2), "cpu_s": round(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, 2)}


def _settings(base: Path, name: str) -> Settings:
    return load_settings(
        {
            "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(base / f"{name}.duckdb"),
            "CDCFLOW_TRANSFORM__WORK_DIR": str(base / f"transform-{name}"),
            "CDCFLOW_LAKE__ROOT": str(base / "lake"),
            "CDCFLOW_TRANSFORM__HEALTH_PORT": "0",
        }
    )


def _backfill(path: Path, sizes: dict[str, int], after: int) -> int:
    """A read of every key, as an incremental snapshot sends it: no LSN."""
    rows = 0
    for table, keys in sizes.items():
        rows += _fill(path, table, keys, sizes, versions=1, ops="rr", after=after)
        with duckdb.connect(str(path)) as conn:
            conn.execute(f"update bronze.lending__{table} set _source_lsn = null where _op = 'r'")  # noqa: S608
    return rows


def run(customers: int, change: float, select: list[str], *, backfilled: bool = False) -> dict[str, object]:
    sizes = {"customers": customers, "facilities": 2 * customers, "transactions": 10 * customers}
    tables = list(sizes)
    with tempfile.TemporaryDirectory(prefix="cdcflow-transform-bench-") as tmp:
        base = Path(tmp)
        (base / "lake").mkdir()
        incremental, full = _settings(base, "incremental"), _settings(base, "full")
        warehouse = DuckDBWarehouse(incremental.duckdb_path())
        for contract in load_contracts(repo_root() / "schemas"):
            warehouse.ensure_bronze(contract)
        warehouse.close()
        path = incremental.duckdb_path()
        bronze = sum(_fill(path, t, n, sizes, versions=2, ops="cu", after=0) for t, n in sizes.items())
        if backfilled:
            bronze += _backfill(path, sizes, after=bronze)
        initial = _timed_run(incremental, full_refresh=True, select=select)
        changed = 0
        for table, n in sizes.items():
            keys = max(2, int(n * change))
            deletes = max(1, keys // 10)
            changed += _fill(path, table, keys - deletes, sizes, versions=1, ops="uu", after=2 * bronze)
            changed += _fill(path, table, deletes, sizes, versions=1, ops="dd", after=3 * bronze)
        shutil.copy(path, full.duckdb_path())
        shutil.copytree(base / "transform-incremental", base / "transform-full")
        incremental_run = _timed_run(incremental, full_refresh=False, select=select)
        full_run = _timed_run(full, full_refresh=True, select=select)
        if not _same_silver(incremental.duckdb_path(), full.duckdb_path(), tables):
            raise SystemExit("the incremental run and the full refresh built different silver tables")
        return {
            "bench": "transform",
            "select": " ".join(select),
            "bronze_rows": bronze,
            "changed_rows": changed,
            "change_fraction": change,
            "backfilled": backfilled,
            "silver_rows": _silver(path, tables),
            "initial_build": initial,
            "incremental": incremental_run,
            "full_refresh": full_run,
            "incremental_vs_full_wall": round(incremental_run["wall_s"] / full_run["wall_s"], 3),
            "incremental_vs_full_cpu": round(incremental_run["cpu_s"] / full_run["cpu_s"], 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50_000, help="customer keys (facilities 2x, transactions 10x)")
    parser.add_argument("--change", type=float, default=0.01, help="fraction of keys with a new version")
    parser.add_argument("--select", nargs="+", default=["silver"], help="dbt selection timed (default: silver)")
    parser.add_argument("--backfilled", action="store_true", help="a backfill's read of every key in bronze")
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING", format="json"))
    print(json.dumps(run(args.customers, args.change, args.select, backfilled=args.backfilled)))


if __name__ == "__main__":
    main()
