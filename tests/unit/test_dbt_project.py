"""The dbt project itself: incremental silver on a real DuckDB file, and the BigQuery profile offline.

No servers: dbt runs in-process (``cdcflow transform``'s own code path) on a DuckDB file of the test, whose
bronze rows the test writes directly. Each run is incremental on top of the last, so the MERGE that deletes
keys, TOAST carried from a version an earlier run processed, a version that arrives late and a truncate are
all exercised on the warehouse, not only in dbt's unit tests (which test the SELECT alone).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Iterator, Sequence
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest
from prometheus_client import CollectorRegistry

from services.common.contracts import Column, TableContract, load_contracts, write_contract
from services.common.settings import Settings, load_settings, repo_root
from services.common.signals import Shutdown
from services.transform.project import materialize
from services.transform.verify import DuckDBSilver, compare_table
from services.transform.wiring import dbt_for, run_transform
from services.warehouse.duckdb import DuckDBWarehouse
from tests.fixtures.customers_bronze import (
    BASE,
    change,
    incremental_read,
    load_bronze,
    query,
    silver_env,
    transform,
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return silver_env(tmp_path)


def _current(path: Path) -> list[tuple[Any, ...]]:
    return query(path, "select customer_id, status, notes, _source_lsn from silver.customers order by 1")


def test_incremental_silver_follows_deletes_toast_late_versions_and_truncates(env: dict[str, str]) -> None:
    warehouse = Path(env["CDCFLOW_WAREHOUSE__DUCKDB_PATH"])

    # a fresh warehouse: the transform creates the bronze tables from the contracts and builds empty silver
    code, registry = transform(env)
    assert code == 0
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "success"}) == 1
    assert _current(warehouse) == []

    load_bronze(
        warehouse,
        [
            change("c", 10, 1, 1, notes="first notes of 1"),
            change("c", 11, 1, 2, notes="notes of 2"),
            change("c", 12, 1, 3),
        ],
    )
    assert transform(env)[0] == 0
    assert _current(warehouse) == [
        (1, "ACTIVE", "first notes of 1", 10),
        (2, "ACTIVE", "notes of 2", 11),
        (3, "ACTIVE", None, 12),
    ]

    load_bronze(
        warehouse,
        [
            change("u", 20, 2, 1, status="SUSPENDED", unavailable=("notes",)),  # TOAST from the last run's rows
            change("d", 21, 2, 2),
            change("u", 30, 2, 3, status="INACTIVE"),
            change("u", 25, 2, 3, status="SUSPENDED", offset=31),  # older version, later offset
            change("c", 22, 2, 4),
        ],
    )
    assert transform(env)[0] == 0
    assert _current(warehouse) == [
        (1, "SUSPENDED", "first notes of 1", 20),
        (3, "INACTIVE", None, 30),
        (4, "ACTIVE", None, 22),
    ]

    load_bronze(
        warehouse,
        [
            change("u", 28, 3, 3, status="SUSPENDED", offset=100),  # arrives a run late: older than silver's
            change("c", 40, 3, 2, notes="notes of 2, again"),  # inserted again after its delete
            change("t", 50, 3),  # truncate: every version before it goes
            change("c", 60, 3, 5),
            change("c", 61, 3, 1, notes="second notes of 1"),
        ],
    )
    assert transform(env)[0] == 0
    assert _current(warehouse) == [(1, "ACTIVE", "second notes of 1", 61), (5, "ACTIVE", None, 60)]

    load_bronze(warehouse, [change("u", 70, 4, 1, status="INACTIVE", unavailable=("notes",))])
    assert transform(env)[0] == 0
    incremental = _current(warehouse)
    assert incremental == [(1, "INACTIVE", "second notes of 1", 70), (5, "ACTIVE", None, 60)]

    history = query(
        warehouse,
        "select customer_id, _source_lsn, status, notes, valid_from, valid_to, is_current"
        " from silver.customers_history where customer_id in (1, 2) order by 1, 2",
    )
    at = {lsn: BASE + dt.timedelta(seconds=lsn) for lsn in (10, 11, 20, 21, 40, 50, 61, 70)}
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in history] == [
        (1, 10, "ACTIVE", "first notes of 1", at[10], at[20], False),
        (1, 20, "SUSPENDED", "first notes of 1", at[20], at[50], False),  # closed by the truncate
        (1, 61, "ACTIVE", "second notes of 1", at[61], at[70], False),
        (1, 70, "INACTIVE", "second notes of 1", at[70], None, True),
        (2, 11, "ACTIVE", "notes of 2", at[11], at[21], False),  # closed by its delete
        (2, 40, "ACTIVE", "notes of 2, again", at[40], at[50], False),
    ]

    # the incremental result is what a rebuild from bronze gives
    assert transform(env, full_refresh=True)[0] == 0
    assert _current(warehouse) == incremental
    executed = Path(env["CDCFLOW_TRANSFORM__WORK_DIR"]) / "target/run/cdcflow/models/silver/customers.sql"
    assert "merge into" not in executed.read_text().lower()  # a rebuild, not a merge

    # silver that no longer matches bronze fails the run (an incremental run leaves key 5 alone)
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("update silver.customers set email = 'changed@example.com' where customer_id = 5")
    code, registry = transform(env)
    assert code == 1
    assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "failure"}) == 1
    assert registry.get_sample_value("cdcflow_dbt_test_failures", {"model": "customers"}) == 1
    assert registry.get_sample_value("cdcflow_transform_last_success_timestamp_seconds") == 0


def test_a_key_changed_by_an_update_keeps_the_values_postgresql_left_toasted(env: dict[str, str]) -> None:
    """``update customers set customer_id = 7 where customer_id = 1``: Debezium sends a delete of key 1 and a
    create of key 7 at the update's LSN, the create without the TOASTed ``notes`` it did not touch. Key 7
    takes key 1's notes (carried within key 1 too), also when the delete arrives a run after the create, and
    later updates of key 7 carry them on; a key with a history of its own before the move does not leak it."""
    warehouse = Path(env["CDCFLOW_WAREHOUSE__DUCKDB_PATH"])
    assert transform(env)[0] == 0
    load_bronze(
        warehouse,
        [
            change("c", 10, 1, 1, notes="notes of 1"),
            change("u", 11, 1, 1, status="SUSPENDED", unavailable=("notes",)),
            change("c", 12, 1, 2, notes="notes of 2"),
            change("c", 13, 1, 8, notes="old notes of 8"),
            change("d", 14, 1, 8),
            change("c", 15, 1, 40, notes="notes of a life 40 ended"),
            change("d", 16, 1, 40),
            change("c", 17, 1, 41, notes="notes of 41"),
        ],
    )
    assert transform(env)[0] == 0
    load_bronze(
        warehouse,
        [
            change("d", 20, 2, 1, partition=1, offset=200),  # key 1 moves to key 7: same LSN, another partition
            change("c", 20, 2, 7, status="SUSPENDED", unavailable=("notes",), offset=201),
            change("c", 21, 2, 8, unavailable=("notes",), offset=211),  # key 2 moves to key 8 ...
            change("d", 22, 2, 41, offset=220),  # two moves in a row, 41 to 40 to 42: one is followed, so 42's
            change("c", 22, 2, 40, unavailable=("notes",), offset=221),  # notes are NULL, never those of the
            change("d", 23, 2, 40, offset=230),  # life key 40 ended at LSN 16
            change("c", 23, 2, 42, unavailable=("notes",), offset=231),
        ],
    )
    assert transform(env)[0] == 0
    assert query(warehouse, "select customer_id, notes from silver.customers where customer_id = 7") == [
        (7, "notes of 1")
    ]
    load_bronze(
        warehouse,
        [
            change("d", 21, 3, 2, partition=1, offset=210),  # ... whose delete arrives a run later
            change("u", 30, 3, 7, status="ACTIVE", unavailable=("notes",), offset=300),
        ],
    )
    assert transform(env)[0] == 0
    expected = [(7, "ACTIVE", "notes of 1"), (8, "ACTIVE", "notes of 2"), (42, "ACTIVE", None)]
    current = "select customer_id, status, notes from silver.customers order by 1"
    assert query(warehouse, current) == expected
    history = query(
        warehouse,
        "select customer_id, _source_lsn, notes from silver.customers_history"
        " where customer_id in (7, 8) order by 1, 2",
    )
    assert history == [(7, 20, "notes of 1"), (7, 30, "notes of 1"), (8, 13, "old notes of 8"), (8, 21, "notes of 2")]
    assert transform(env, full_refresh=True)[0] == 0
    assert query(warehouse, current) == expected


class _NotFound(BaseHTTPRequestHandler):
    """Answers every BigQuery API call with 404: no dataset, no table — all dbt compile needs to ask."""

    def _reply(self) -> None:
        body = json.dumps({"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}}).encode()
        self.send_response(HTTPStatus.NOT_FOUND)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply()

    def do_POST(self) -> None:
        self._reply()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def empty_bigquery() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


_PROBE = """
{{ config(meta={'cdcflow_delete_ops': ['d', 't']}) }}
{{ get_merge_sql(
    api.Relation.create(database='p', schema='silver', identifier='customers'),
    '(select 1)',
    ['customer_id'],
    [api.Column.create('customer_id', 'INT64'), api.Column.create('status', 'STRING'),
     api.Column.create('_op', 'STRING')],
) }}
"""


def test_an_incremental_snapshot_read_takes_its_place_in_its_partition(env: dict[str, str]) -> None:
    warehouse = Path(env["CDCFLOW_WAREHOUSE__DUCKDB_PATH"])
    assert transform(env)[0] == 0
    load_bronze(
        warehouse,
        [
            # a re-snapshot repairs a key whose update at LSN 20 never reached bronze
            change("c", 10, 1, 1, offset=10),
            incremental_read(30, 1, "SUSPENDED"),
            # a change committed after the chunk's window closed, with an LSN below the window's: it wins
            incremental_read(40, 2, "ACTIVE"),
            change("u", 15, 1, 2, status="INACTIVE", offset=41),
            # a change after the read, as usual
            change("c", 12, 1, 3, offset=12),
            incremental_read(50, 3, "ACTIVE"),
            change("u", 60, 1, 3, status="INACTIVE", offset=51),
            # a row no change of which is in bronze (its table was added to capture after it was written)
            incremental_read(70, 4, "SUSPENDED"),
        ],
    )
    assert transform(env)[0] == 0
    assert [row[:2] for row in _current(warehouse)] == [
        (1, "SUSPENDED"),
        (2, "INACTIVE"),
        (3, "INACTIVE"),
        (4, "SUSPENDED"),
    ]


def test_a_full_build_of_history_keeps_the_reads_an_incremental_run_keeps(env: dict[str, str]) -> None:
    """A backfill's read has no LSN. The full build took two versions with no LSN for copies of one version,
    so it dropped a key's newest read (and a read followed by another) that incremental runs keep: a history
    built after a backfill, or rebuilt with --full-refresh, lost those keys."""
    warehouse = Path(env["CDCFLOW_WAREHOUSE__DUCKDB_PATH"])
    assert transform(env)[0] == 0
    load_bronze(
        warehouse,
        [
            change("c", 100, 1, 2, offset=100),
            incremental_read(101, 1, "ACTIVE"),  # a key only a backfill read
            incremental_read(102, 3, "ACTIVE"),  # a key read twice
            incremental_read(103, 3, "SUSPENDED"),
        ],
    )
    history = "select customer_id, status, _kafka_offset, is_current from silver.customers_history order by 1, 3"
    assert transform(env)[0] == 0
    incremental = query(warehouse, history)
    assert [row[0] for row in incremental] == [1, 2, 3, 3]
    assert transform(env, full_refresh=True)[0] == 0
    assert query(warehouse, history) == incremental


def test_a_backfill_after_a_truncate_keeps_its_reads(env: dict[str, str]) -> None:
    """A read of an incremental snapshot has no LSN of its own; after a truncate it still follows the key's
    versions streamed since, so it is live in current state and open in history, not cut by the truncate."""
    warehouse = Path(env["CDCFLOW_WAREHOUSE__DUCKDB_PATH"])
    assert transform(env)[0] == 0
    truncate = change("t", 20, 1, offset=20)
    load_bronze(
        warehouse,
        [
            change("c", 10, 1, 1, offset=10),  # gone with the truncate
            incremental_read(15, 3, "ACTIVE"),  # read by an earlier backfill: gone with the truncate too
            truncate,
            change("c", 30, 1, 2, offset=30),  # inserted after it, then read by a backfill
            incremental_read(40, 2, "SUSPENDED"),
        ],
    )
    assert transform(env)[0] == 0
    assert [row[:2] for row in _current(warehouse)] == [(2, "SUSPENDED")]
    history = query(
        warehouse,
        "select customer_id, status, _kafka_offset, valid_to is null from silver.customers_history order by 1, 3",
    )
    assert history == [
        (1, "ACTIVE", 10, False),
        (2, "ACTIVE", 30, False),
        (2, "SUSPENDED", 40, True),
        (3, "ACTIVE", 15, False),
    ]


def test_a_read_after_a_partition_raise_follows_the_versions_the_key_left(env: dict[str, str]) -> None:
    """Raising a topic's partition count sends a key's later changes to another partition. A backfill's read
    there still follows the key's versions in the partition it left (written before it), so it repairs a
    version that never reached bronze; a version written after it elsewhere still wins; history agrees."""
    warehouse = Path(env["CDCFLOW_WAREHOUSE__DUCKDB_PATH"])
    assert transform(env)[0] == 0
    load_bronze(
        warehouse,
        [
            change("t", 5, 1, offset=5, emitted=5),
            # written before the raise in partition 0; its update at LSN 20 was dead-lettered
            change("c", 10, 1, 1, offset=10, emitted=10),
            incremental_read(1, 1, "SUSPENDED", partition=3, emitted=100),
            # read by a backfill before the raise, and again after it: the later read wins
            change("c", 11, 1, 2, offset=11, partition=1, emitted=11),
            incremental_read(20, 2, "INACTIVE", partition=1, emitted=50),
            incremental_read(2, 2, "SUSPENDED", partition=4, emitted=100),
            # inserted after the truncate, moved by the raise, then read: the truncate does not cut the read
            change("c", 50, 1, 5, offset=50, emitted=50),
            incremental_read(3, 5, "SUSPENDED", partition=3, emitted=100),
            # a change emitted after the read, in the partition the key left: it follows the read
            incremental_read(4, 6, "INACTIVE", partition=5, emitted=100),
            change("u", 45, 1, 6, status="SUSPENDED", offset=60, partition=2, emitted=110),
        ],
    )
    assert transform(env)[0] == 0
    assert [row[:2] for row in _current(warehouse)] == [
        (1, "SUSPENDED"),
        (2, "SUSPENDED"),
        (5, "SUSPENDED"),
        (6, "SUSPENDED"),
    ]
    history = query(
        warehouse,
        "select customer_id, status, _kafka_partition, valid_to is null from silver.customers_history"
        " where customer_id in (1, 2, 5) order by 1, valid_from, _kafka_partition",
    )
    assert history == [
        (1, "ACTIVE", 0, False),
        (1, "SUSPENDED", 3, True),
        (2, "ACTIVE", 1, False),
        (2, "INACTIVE", 1, False),
        (2, "SUSPENDED", 4, True),
        (5, "ACTIVE", 0, False),
        (5, "SUSPENDED", 3, True),
    ]


def test_the_project_compiles_for_bigquery_offline(env: dict[str, str], empty_bigquery: str, tmp_path: Path) -> None:
    """The BigQuery profile (oauth-secrets, a dummy token, api_endpoint) and every bigquery__ variant render."""
    env |= {"CDCFLOW_TRANSFORM__TARGET": "bigquery", "CDCFLOW_TRANSFORM__BIGQUERY_API_ENDPOINT": empty_bigquery}
    settings = load_settings(env)
    dbt = dbt_for(settings)
    materialize(repo_root() / "dbt", dbt.project_dir, load_contracts(repo_root() / "schemas"))
    (dbt.project_dir / "analyses").mkdir()
    (dbt.project_dir / "analyses" / "probe_merge.sql").write_text(_PROBE)

    manifest = dbt.parse()
    silver = manifest.nodes["model.cdcflow.customers"]
    assert (silver.schema, silver.config.incremental_strategy) == ("silver", "merge")
    assert manifest.nodes["model.cdcflow.dim_customers"].schema == "gold"

    outcome = dbt.invoke(["compile"], "--exclude", "test_type:unit")
    assert outcome.success, outcome.exception
    compiled = dbt.target_path / "compiled" / "cdcflow"
    current = (compiled / "models" / "silver" / "customers.sql").read_text()
    assert "`cdcflow-local`.`bronze`.`lending__customers`" in current
    assert "'notes' in unnest(_unavailable_columns)" in current
    assert "list_contains" not in current
    risk = (compiled / "models" / "gold" / "facility_performance.sql").read_text()
    assert "date_diff(" in risk
    payments = (compiled / "models" / "gold" / "monthly_payments_by_customer_type_and_facility_status.sql").read_text()
    assert "date_trunc(value_date, month)" in payments
    assert "`cdcflow-local`.`silver`.`enriched__transactions`" in payments
    merge = " ".join((compiled / "analyses" / "probe_merge.sql").read_text().split())
    assert "when matched and dbt_internal_source._op in ('d', 't') then delete" in merge
    assert "when not matched and not (dbt_internal_source._op in ('d', 't')) then insert" in merge


def test_duckdb_silver_uses_the_cdcflow_merge_strategy(env: dict[str, str]) -> None:
    settings = load_settings(env)
    dbt = dbt_for(settings)
    contracts = load_contracts(repo_root() / "schemas")
    materialize(repo_root() / "dbt", dbt.project_dir, contracts)
    warehouse = DuckDBWarehouse(settings.duckdb_path())
    for contract in contracts:
        warehouse.ensure_bronze(contract)  # dbt's unit tests read their inputs' columns from the warehouse
    manifest = dbt.parse()
    keys = {"customers": "customer_id", "facilities": "facility_id", "transactions": "transaction_id"}
    for table, key in keys.items():
        node = manifest.nodes[f"model.cdcflow.{table}"]
        assert node.config.incremental_strategy == "cdcflow_merge"
        assert node.config.meta["cdcflow_delete_ops"] == ["d", "t"]
        assert node.config.unique_key == [key]
    unit_tests = {u.name for u in manifest.unit_tests.values()}
    assert {"current_state_carries_toasted_values_forward", "current_state_honours_truncate"} <= unit_tests
    assert "payments_group_by_the_segment_as_of_each_payment" in unit_tests
    # a gold unit test reads its silver input's columns from the warehouse: build that table, empty
    assert dbt.invoke(["run"], "--select", "enriched__transactions", "--empty").success

    outcome = dbt.invoke(["test"], "--select", "test_type:unit")
    assert outcome.success, outcome.exception
    statuses = {r.node.name: str(r.status) for r in outcome.result.results}
    assert len(statuses) == len(unit_tests)
    assert set(statuses.values()) == {"pass"}


GADGETS = TableContract(
    "lending",
    "gadgets",
    (
        Column("gadget_id", "int64", "bigint", nullable=False),
        Column("mood", "string", "mood"),  # an enum: text on the wire
        Column("tags", "array", "text[]", items=Column("element", "string", "text")),
        Column("payload", "bytes", "bytea"),
        Column("ratio", "variable_decimal", "numeric"),
        Column("price", "decimal", "price", precision=12, scale=2),  # a domain over numeric(12,2)
    ),
    ("gadget_id",),
)


LEDGER = TableContract(
    "lending",
    "ledger_entries",
    (Column("entry_id", "variable_decimal", "numeric", nullable=False), Column("label", "string", "text")),
    ("entry_id",),
)
LEDGER_MODELS = ["ledger_entries", "ledger_entries_history"]


@pytest.fixture
def ledger(env: dict[str, str], tmp_path: Path) -> Settings:
    """Settings whose contracts are the repository's and LEDGER's, its bronze table created."""
    contracts_dir = tmp_path / "schemas"
    for contract in [*load_contracts(repo_root() / "schemas"), LEDGER]:
        write_contract(contracts_dir, contract)
    settings = load_settings(env | {"CDCFLOW_TRANSFORM__CONTRACTS_DIR": str(contracts_dir)})
    DuckDBWarehouse(settings.duckdb_path()).ensure_bronze(LEDGER)
    return settings


def _ledger_change(settings: Settings, op: str, lsn: int, *, offset: int | None = None, **row: str | None) -> None:
    """One change of a ledger entry in bronze, committed ``lsn`` seconds into 2026-12-01 and loaded now."""
    names = "".join(f"{name}, " for name in row)
    with duckdb.connect(str(settings.duckdb_path())) as conn:
        conn.execute(
            f"insert into bronze.lending__ledger_entries ({names}_op, _source_lsn, _unavailable_columns,"
            " _kafka_offset, _source_ts, _loaded_at, _ingested_at, _is_snapshot, _kafka_topic, _kafka_partition)"
            f" values ({'?, ' * len(row)}?, ?, [], ?, timestamp '2026-12-01' + to_seconds(?), now(),"
            " now(), false, 'cdcflow.lending.ledger_entries', 0)",
            [*row.values(), op, lsn, lsn if offset is None else offset, lsn],
        )


def _build(settings: Settings, *, full_refresh: bool = False) -> None:
    code = run_transform(
        settings, Shutdown(), once=True, select=LEDGER_MODELS, full_refresh=full_refresh, registry=CollectorRegistry()
    )
    assert code == 0


def test_a_key_of_unconstrained_numeric_is_one_key_across_full_and_incremental_runs(ledger: Settings) -> None:
    """Bronze on DuckDB spells an unconstrained NUMERIC with 38 decimals, silver in its exact form: an update, a
    delete and a truncate after the first build must find the row that build wrote, not add a second one."""
    one_and_a_half, two = "1.50000000000000000000000000000000000000", "2.00000000000000000000000000000000000000"

    def build() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        _build(ledger)
        current = query(ledger.duckdb_path(), "select entry_id, label from silver.ledger_entries order by 1")
        history = query(
            ledger.duckdb_path(),
            "select entry_id, label, is_current from silver.ledger_entries_history order by _source_lsn",
        )
        return current, history

    _ledger_change(ledger, "c", 10, entry_id=one_and_a_half, label="a")
    _ledger_change(ledger, "c", 11, entry_id=two, label="x")
    assert build()[0] == [("1.5", "a"), ("2", "x")]  # the first build: a full one
    _ledger_change(ledger, "u", 20, entry_id=one_and_a_half, label="b")
    assert build() == (
        [("1.5", "b"), ("2", "x")],
        [("1.5", "a", False), ("2", "x", True), ("1.5", "b", True)],
    )
    _ledger_change(ledger, "d", 30, entry_id=one_and_a_half)
    assert build() == ([("2", "x")], [("1.5", "a", False), ("2", "x", True), ("1.5", "b", False)])
    _ledger_change(ledger, "t", 40)
    assert build() == ([], [("1.5", "a", False), ("2", "x", False), ("1.5", "b", False)])


def test_a_version_sent_again_is_one_version_in_history(ledger: Settings) -> None:
    """After a connector restart Debezium sends changes again (the same LSN, later offsets): history keeps one
    row per version, whether the copy arrives in the same run (a full build) or a later one."""

    def history(*, full_refresh: bool = False) -> list[tuple[Any, ...]]:
        _build(ledger, full_refresh=full_refresh)
        return query(
            ledger.duckdb_path(),
            "select entry_id, label, _kafka_offset, is_current from silver.ledger_entries_history order by 1, 3",
        )

    _ledger_change(ledger, "c", 10, offset=0, entry_id="1", label="a")
    _ledger_change(ledger, "u", 20, offset=1, entry_id="1", label="b")
    assert history() == [("1", "a", 0, False), ("1", "b", 1, True)]
    _ledger_change(ledger, "u", 20, offset=2, entry_id="1", label="b")  # sent again, with the next change after it
    _ledger_change(ledger, "u", 30, offset=3, entry_id="1", label="c")
    _ledger_change(ledger, "u", 30, offset=4, entry_id="1", label="c")
    expected = [("1", "a", 0, False), ("1", "b", 2, False), ("1", "c", 4, True)]
    assert history() == expected  # incremental: the earlier copy written before is gone
    assert history(full_refresh=True) == expected


def test_a_column_loaded_before_silver_knew_of_it_is_filled_once_it_does(ledger: Settings, tmp_path: Path) -> None:
    """The loader adds a column to bronze and loads rows carrying it while a run built from the older contract
    passes them (its watermark goes past them); the next run, from the new contract, adds the column to silver
    and must fill it for those rows too, not only for rows loaded after it."""
    evolved = dataclasses.replace(LEDGER, columns=(*LEDGER.columns, Column("memo", "string", "text")), version=2)
    _build(ledger)  # silver of the first contract, empty
    DuckDBWarehouse(ledger.duckdb_path()).ensure_bronze(evolved)  # the loader takes the new version first
    _ledger_change(ledger, "c", 10, entry_id="1", label="l", memo="paid")
    _build(ledger)  # still from the first contract: the row reaches silver without its memo
    write_contract(tmp_path / "schemas", evolved)
    _ledger_change(ledger, "c", 20, entry_id="2", label="l", memo="due")
    _build(ledger)
    for model in LEDGER_MODELS:
        found = query(ledger.duckdb_path(), f"select entry_id, memo from silver.{model} order by 1")
        assert found == [("1", "paid"), ("2", "due")], model


def test_a_new_table_gets_silver_and_verify_with_no_sql_written(env: dict[str, str], tmp_path: Path) -> None:
    """Onboarding without PostgreSQL: a contract with an enum, an array, bytea, an unconstrained NUMERIC and
    a domain; its silver is generated, built and compared by verify's canonical values."""
    contracts_dir = tmp_path / "schemas"
    for contract in [*load_contracts(repo_root() / "schemas"), GADGETS]:
        write_contract(contracts_dir, contract)
    env |= {"CDCFLOW_TRANSFORM__CONTRACTS_DIR": str(contracts_dir)}
    settings = load_settings(env)
    DuckDBWarehouse(settings.duckdb_path()).ensure_bronze(GADGETS)
    base = {"_is_snapshot": False, "_kafka_topic": "cdcflow.lending.gadgets", "_kafka_partition": 0}
    with duckdb.connect(str(settings.duckdb_path())) as conn:
        rows = [
            (1, "happy", ["a", "b"], b"\x00\x01", "0.50000000000000000000000000000000000000", "12.30", "c", 10, []),
            (2, "sad", ["z"], b"\xff", "1.00000000E-30", "1.00", "c", 11, []),
            (1, "sad", None, None, None, "13.00", "u", 12, ["tags", "payload", "ratio"]),
        ]
        for gadget_id, mood, tags, payload, ratio, price, op, lsn, unavailable in rows:
            conn.execute(
                "insert into bronze.lending__gadgets (gadget_id, mood, tags, payload, ratio, price, _op, _source_lsn,"
                " _unavailable_columns, _kafka_offset, _source_ts, _loaded_at, _ingested_at, _is_snapshot,"
                " _kafka_topic, _kafka_partition) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), now(), now(), ?, ?, ?)",
                [gadget_id, mood, tags, payload, ratio, price, op, lsn, unavailable, lsn, *base.values()],
            )

    code = run_transform(
        settings, Shutdown(), once=True, select=["gadgets", "gadgets_history"], registry=CollectorRegistry()
    )
    assert code == 0
    assert (Path(env["CDCFLOW_TRANSFORM__WORK_DIR"]) / "project/models/silver/gadgets.sql").is_file()
    assert not (repo_root() / "dbt/models/silver/gadgets.sql").exists()  # the source tree is left alone

    source = [
        (1, "sad", ["a", "b"], b"\x00\x01", Decimal("0.5"), Decimal("13.00")),
        (2, "sad", ["z"], b"\xff", Decimal("1E-30"), Decimal("1.00")),
    ]

    class Source:
        def exists(self, contract: TableContract) -> bool:
            return True

        def columns(self, contract: TableContract) -> frozenset[str]:
            return frozenset(c.name for c in contract.columns)

        def rows(self, contract: TableContract) -> Iterator[Sequence[Any]]:
            yield from source

        def row(self, contract: TableContract, key: Sequence[Any]) -> Sequence[Any] | None:
            return next((r for r in source if r[0] == key[0]), None)

    result = compare_table(GADGETS, Source(), DuckDBSilver(settings.duckdb_path()))
    assert not result.drift, result
    assert query(settings.duckdb_path(), "select ratio from silver.gadgets order by gadget_id") == [
        ("0.5",),
        ("0.000000000000000000000000000001",),
    ]


def test_a_widened_decimal_widens_bronze_and_silver_in_place(env: dict[str, str], tmp_path: Path) -> None:
    """numeric(12,2) → numeric(16,4) in PostgreSQL: bronze and silver change type in place, earlier rows keep
    their values exactly and a value only the new type holds lands exactly, in current state and history."""
    contracts_dir = tmp_path / "schemas"
    for contract in load_contracts(repo_root() / "schemas"):
        write_contract(contracts_dir, contract)
    write_contract(contracts_dir, GADGETS)
    env |= {"CDCFLOW_TRANSFORM__CONTRACTS_DIR": str(contracts_dir)}
    settings = load_settings(env)
    warehouse = DuckDBWarehouse(settings.duckdb_path())
    warehouse.ensure_bronze(GADGETS)
    select = ["gadgets", "gadgets_history"]

    def insert(gadget_id: int, price: str, lsn: int) -> None:
        with duckdb.connect(str(settings.duckdb_path())) as conn:
            conn.execute(
                "insert into bronze.lending__gadgets (gadget_id, price, _op, _source_lsn, _kafka_offset, _source_ts,"
                " _loaded_at, _ingested_at, _is_snapshot, _kafka_topic, _kafka_partition, _unavailable_columns)"
                " values (?, ?, 'c', ?, ?, now(), now(), now(), false, 'cdcflow.lending.gadgets', 0, [])",
                [gadget_id, price, lsn, lsn],
            )

    def transform() -> None:
        assert run_transform(settings, Shutdown(), once=True, select=select, registry=CollectorRegistry()) == 0

    insert(1, "9999999999.99", 10)
    transform()
    widened = dataclasses.replace(
        GADGETS,
        version=2,
        columns=tuple(
            dataclasses.replace(c, pg_type="numeric(16,4)", precision=16, scale=4) if c.name == "price" else c
            for c in GADGETS.columns
        ),
    )
    write_contract(contracts_dir, widened)
    change = warehouse.ensure_bronze(widened)
    assert (change.added, change.widened) == ([], ["price"])
    insert(2, "999999999999.1234", 11)
    transform()

    for model in select:
        types = query(
            settings.duckdb_path(),
            f"select data_type from information_schema.columns where table_schema = 'silver'"
            f" and table_name = '{model}' and column_name = 'price'",
        )
        assert types == [("DECIMAL(16,4)",)], model
        prices = query(settings.duckdb_path(), f"select gadget_id, price from silver.{model} order by gadget_id")
        assert prices == [(1, Decimal("9999999999.99")), (2, Decimal("999999999999.1234"))], model
