"""``cdcflow verify`` and ``cdcflow backfill deletes --dry-run`` with silver in BigQuery.

Customers reach silver in bqemulator through the BigQuery loader and the repository's dbt project; a PostgreSQL
database of the test holds the same rows. ``verify`` finds them equal; after a name changes and a row is deleted
in PostgreSQL, it reports the changed column and the extra row and exits 1, and ``backfill deletes --dry-run``
counts the extra key (sending nothing). ``verify --json`` says the same in JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from services.common.contracts import load_contracts
from services.common.contracts.store import write_contract
from services.common.lake import LocalLake
from services.common.settings import Settings, load_settings, repo_root
from services.common.signals import Shutdown
from services.loader.wiring import run_loader
from services.stack.runtime import Stack, demo_schema_sql
from services.transform.project import materialize
from services.transform.wiring import dbt_for
from tests.fixtures.bqemulator import BigQueryEmulator, bigquery_env
from tests.fixtures.lakefiles import LakeFiles, lending_contract

PROJECT = "cdcflow-verify"
T0 = 1_795_000_000_000_000
CDCFLOW = str(Path(sys.executable).with_name("cdcflow"))
NAMES = {1: "Ada", 2: "Grace", 3: "Edsger", 4: "Barbara"}


def _customer(customer_id: int) -> dict[str, object]:
    return {
        "customer_id": customer_id,
        "external_ref": f"00000000-0000-4000-8000-{customer_id:012d}",
        "full_name": NAMES[customer_id],
        "email": f"c{customer_id}@example.test",
        "status": "ACTIVE",
        "customer_type": "BUSINESS" if customer_id % 2 else "INDIVIDUAL",
        "date_of_birth": 7000 + customer_id if customer_id != 4 else None,
        "credit_limit": f"{1500 + customer_id}.50",
        "profile": json.dumps({"tier": customer_id, "tags": ["a", "é"]}),
        "notes": None if customer_id == 2 else f"notes {customer_id} " * customer_id,
        "created_at": f"2026-11-22T10:00:0{customer_id}.000001Z",
        "updated_at": "2026-11-22T10:00:00Z",
    }


def _insert_event(offset: int, ts_us: int) -> bytes:
    source = {"ts_us": ts_us + offset, "ts_ms": (ts_us + offset) // 1000, "lsn": 1000 + offset, "snapshot": "false"}
    return json.dumps({"before": None, "after": _customer(offset + 1), "source": source, "op": "c"}).encode()


@pytest.fixture
def source_db(stack: Stack, settings: Settings) -> Iterator[str]:
    """A database of the test holding the customers silver will hold."""
    name = f"verify_bq_{uuid.uuid4().hex[:8]}"
    maintenance = settings.postgres.model_copy(update={"database": "postgres"}).dsn()
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'create database "{name}"'.encode())
    dsn = settings.postgres.model_copy(update={"database": name}).dsn()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(demo_schema_sql().encode())
            for customer_id in NAMES:
                row = _customer(customer_id)
                conn.execute(
                    "insert into lending.customers (customer_id, external_ref, full_name, email, status, customer_type,"
                    " date_of_birth, credit_limit, profile, notes, created_at, updated_at) values (%s, %s, %s, %s, %s,"
                    " %s, date '1970-01-01' + %s::integer, %s, %s, %s, %s, %s)",
                    [row[k] for k in ("customer_id", "external_ref", "full_name", "email", "status", "customer_type")]
                    + [row["date_of_birth"], row["credit_limit"], row["profile"], row["notes"]]
                    + [row["created_at"], row["updated_at"]],
                )
        yield name
    finally:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)'.encode())


def _cdcflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CDCFLOW, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


def test_verify_and_backfill_deletes_read_silver_in_bigquery(
    bigquery_emulator: BigQueryEmulator, source_db: str, settings: Settings, tmp_path: Path
) -> None:
    bucket, folder = bigquery_emulator.bucket()
    lake = LocalLake(folder / "lake")
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    customers = lending_contract("customers")
    write_contract(contracts, customers)
    LakeFiles(lake, customers, event=_insert_event).write(range(len(NAMES)), ts_us=T0)
    env = {
        **bigquery_env(bigquery_emulator, tmp_path, PROJECT, folder / "lake", contracts, bucket=bucket),
        "CDCFLOW_POSTGRES__DATABASE": source_db,
    }
    configured = load_settings(env)
    assert run_loader(configured, Shutdown(), once=True) == 0
    dbt = dbt_for(configured)
    materialize(repo_root() / "dbt", dbt.project_dir, load_contracts(repo_root() / "schemas"))
    build = dbt.build(select=["customers"])
    assert build.error is None, build.error
    assert build.success, [(n.name, n.status, n.message) for n in build.nodes if n.failed]

    cli_env = {**os.environ, **env}
    equal = _cdcflow(cli_env, "verify", "--table", "lending.customers")
    assert equal.returncode == 0, equal.stdout + equal.stderr
    assert "no drift: 1 table(s) equal their source" in equal.stdout

    with psycopg.connect(settings.postgres.model_copy(update={"database": source_db}).dsn(), autocommit=True) as conn:
        conn.execute("update lending.customers set full_name = 'Grace Hopper' where customer_id = 2")
        conn.execute("delete from lending.customers where customer_id = 3")
    drift = _cdcflow(cli_env, "verify", "--table", "lending.customers")
    assert drift.returncode == 1, drift.stdout + drift.stderr
    said = " ".join(drift.stdout.split())
    assert "lending.customers: different: (2) (columns: full_name)" in said
    assert "lending.customers: extra: (3)" in said
    reported = _cdcflow(cli_env, "verify", "--table", "lending.customers", "--json")
    assert reported.returncode == 1, reported.stdout + reported.stderr
    report = json.loads(reported.stdout)
    [customers_report] = report["tables"]
    assert report["drift"] is True
    counts = ("source_rows", "silver_rows", "missing", "extra", "different")
    assert [customers_report[k] for k in counts] == [3, 4, 0, 1, 1]
    assert {(d["problem"], tuple(d["key"]), tuple(d["columns"])) for d in customers_report["first"]} == {
        ("different", ("2",), ("full_name",)),
        ("extra", ("3",), ()),
    }

    counted = _cdcflow(cli_env, "backfill", "deletes", "lending.customers", "--dry-run", "--json")
    assert counted.returncode == 0, counted.stdout + counted.stderr
    [result] = json.loads(counted.stdout)
    assert (result["silver_rows"], result["absent"], result["sent"], result["first"]) == (4, 1, 0, [["3"]])
