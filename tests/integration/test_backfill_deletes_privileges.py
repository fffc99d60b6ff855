"""``backfill deletes`` as a role that may only read the table: it counts the rows silver holds and the source
lacks, and refuses to send anything with an error that says which privilege the SHARE lock needs — PostgreSQL
asks for UPDATE, DELETE or TRUNCATE to lock a table in that mode, and a connector's role usually has SELECT."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest

from services.common.settings import Settings
from services.stack.runtime import Stack
from services.transform.deletes import DeleteError, emit_deletes
from tests.fixtures.lakefiles import lending_contract
from tests.fixtures.stack import login_role

ABSENT_ID = 987_654_321_987


@pytest.fixture
def reader(stack: Stack, settings: Settings, pg: psycopg.Connection[tuple[object, ...]]) -> Iterator[Settings]:
    """Settings that connect as a role with SELECT on lending.customers and nothing else."""
    with login_role(pg, settings, "cdcflow_reader", ["usage on schema lending", "select on lending.customers"]) as role:
        yield role


def test_a_role_that_may_only_read_counts_but_sends_nothing(
    reader: Settings, pg: psycopg.Connection[tuple[object, ...]], tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as conn:  # silver holding a row the source lacks
        conn.execute("create schema silver")
        conn.execute("create table silver.customers (customer_id bigint, _kafka_partition integer)")
        conn.execute("insert into silver.customers values (?, 4)", [ABSENT_ID])
    assert pg.execute("select count(*) from lending.customers where customer_id = %s", (ABSENT_ID,)).fetchone() == (0,)
    configured = reader.model_copy(
        update={"warehouse": reader.warehouse.model_copy(update={"duckdb_path": str(warehouse)})}
    )
    customers = lending_contract("customers")

    [counted] = emit_deletes(configured, [customers], dry_run=True)
    assert (counted.silver_rows, counted.absent, counted.sent, counted.first) == (1, 1, 0, [(str(ABSENT_ID),)])

    with pytest.raises(DeleteError, match=r"cannot be locked in SHARE mode as this role .* UPDATE, DELETE or TRUNCATE"):
        emit_deletes(configured, [customers])
