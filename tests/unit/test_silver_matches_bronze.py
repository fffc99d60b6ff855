"""dbt's `silver_matches_bronze` test on a real DuckDB file, with loads going on beside it: a key whose newest
bronze version silver has not read yet is in flight and left out; a settled key that differs still fails."""

from __future__ import annotations

from pathlib import Path

import duckdb

from services.common.settings import load_settings
from services.common.signals import Shutdown
from services.transform.dbt import BuildResult
from services.transform.wiring import dbt_for, run_transform
from tests.fixtures.customers_bronze import change, load_bronze, silver_env

_TEST = "silver_matches_bronze__customers"


def _test(env: dict[str, str]) -> BuildResult:
    return dbt_for(load_settings(env)).build(select=[_TEST])


def _status(result: BuildResult) -> tuple[str, int]:
    (node,) = result.nodes
    return node.status, node.failures


def test_versions_in_flight_are_left_out_and_settled_keys_still_compared(tmp_path: Path) -> None:
    env = silver_env(tmp_path)
    warehouse = tmp_path / "warehouse.duckdb"
    assert (
        run_transform(load_settings(env), Shutdown(), once=True, select=["customers"], exclude=["test_type:unit"]) == 0
    )
    load_bronze(warehouse, [change("c", 10, 1, 1), change("c", 11, 1, 2), change("c", 12, 1, 3)])
    assert (
        run_transform(load_settings(env), Shutdown(), once=True, select=["customers"], exclude=["test_type:unit"]) == 0
    )
    # loaded after silver's run: a new version of key 1 and a delete of key 2, not in silver yet
    load_bronze(warehouse, [change("u", 20, 2, 1, status="SUSPENDED"), change("d", 21, 2, 2)])
    assert _status(_test(env)) == ("pass", 0)
    with duckdb.connect(str(warehouse)) as conn:  # a settled key silver got wrong
        conn.execute("update silver.customers set status = 'INACTIVE' where customer_id = 3")
    assert _status(_test(env)) == ("fail", 1)
