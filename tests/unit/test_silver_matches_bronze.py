"""dbt's `silver_matches_bronze` test on a real DuckDB file, with loads going on beside it: a key whose newest
bronze version silver has not read yet is in flight and left out; a settled key that differs still fails."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import duckdb

from services.common.settings import load_settings
from services.common.signals import Shutdown
from services.transform.dbt import BuildResult
from services.transform.wiring import dbt_for, run_transform

_BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_TEST = "silver_matches_bronze__customers"


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "CDCFLOW_TRANSFORM__WORK_DIR": str(tmp_path / "transform"),
        "CDCFLOW_LAKE__ROOT": str(tmp_path / "lake"),
        "CDCFLOW_TRANSFORM__HEALTH_PORT": "0",
        "CDCFLOW_SECRETS_DIR": str(tmp_path / "no-secrets"),
    }


def _version(customer_id: int, lsn: int, loaded_hour: int, *, op: str = "u", status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "external_ref": str(uuid.UUID(int=customer_id)),
        "full_name": f"Customer {customer_id}",
        "email": f"c{customer_id}@example.com",
        "status": status,
        "customer_type": "INDIVIDUAL",
        "credit_limit": "1000.00",
        "created_at": _BASE,
        "updated_at": _BASE + dt.timedelta(seconds=lsn),
        "_op": op,
        "_source_lsn": lsn,
        "_source_ts": _BASE + dt.timedelta(seconds=lsn),
        "_is_snapshot": False,
        "_unavailable_columns": [],
        "_kafka_topic": "cdcflow.lending.customers",
        "_kafka_partition": 0,
        "_kafka_offset": lsn,
        "_ingested_at": _BASE,
        "_loaded_at": _BASE + dt.timedelta(hours=loaded_hour),
    }


def _load(path: Path, rows: list[dict[str, Any]]) -> None:
    with duckdb.connect(str(path)) as conn:
        for row in rows:
            marks = ", ".join("?" for _ in row)
            conn.execute(
                f"insert into bronze.lending__customers ({', '.join(row)}) values ({marks})", list(row.values())
            )


def _test(env: dict[str, str]) -> BuildResult:
    return dbt_for(load_settings(env)).build(select=[_TEST])


def _status(result: BuildResult) -> tuple[str, int]:
    (node,) = result.nodes
    return node.status, node.failures


def test_versions_in_flight_are_left_out_and_settled_keys_still_compared(tmp_path: Path) -> None:
    env = _env(tmp_path)
    warehouse = tmp_path / "warehouse.duckdb"
    assert (
        run_transform(load_settings(env), Shutdown(), once=True, select=["customers"], exclude=["test_type:unit"]) == 0
    )
    _load(warehouse, [_version(1, 10, 1, op="c"), _version(2, 11, 1, op="c"), _version(3, 12, 1, op="c")])
    assert (
        run_transform(load_settings(env), Shutdown(), once=True, select=["customers"], exclude=["test_type:unit"]) == 0
    )
    # loaded after silver's run: a new version of key 1 and a delete of key 2, not in silver yet
    _load(warehouse, [_version(1, 20, 2, status="SUSPENDED"), _version(2, 21, 2, op="d")])
    assert _status(_test(env)) == ("pass", 0)
    with duckdb.connect(str(warehouse)) as conn:  # a settled key silver got wrong
        conn.execute("update silver.customers set status = 'INACTIVE' where customer_id = 3")
    assert _status(_test(env)) == ("fail", 1)
