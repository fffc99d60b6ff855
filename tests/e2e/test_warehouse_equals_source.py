"""Fifty thousand operations, a column added midway: the warehouse still equals the source.

A seeded workload of 50,000 operations (inserts, updates, updates that leave the TOASTed ``customers.notes``
untouched, rewrites of it, deletes that cascade) runs against a source of its own while the lake writer
consumes. Halfway, the loader and the transform run once, and ``facilities`` gets a new column while the
writer keeps running; the second half of the workload and updates of the new column follow. Then the
pipeline drains, loads, transforms incrementally, and ``verify`` must find zero drift on every table
(the new column included), with every dbt model and test passing.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from services.stack.workload import Workload
from tests.fixtures.pipeline import WriterProcess
from tests.fixtures.source import IsolatedSource
from tests.fixtures.transform import describe

LENDING = ["lending.customers", "lending.facilities", "lending.transactions"]
OPERATIONS_PER_HALF = 25_000


def test_fifty_thousand_operations_with_an_added_column_leave_zero_drift(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    settings = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path)

    writing = writer.start()
    first = Workload(settings.postgres, seed=5001).run(rate=50_000, duration_s=900, max_ops=OPERATIONS_PER_HALF)
    assert writer.terminate(writing) == 0, writer.logs()[-3000:]
    isolated_source.wait_captured()  # a drain reads the topics' ends: the changes must be in Kafka by then
    pipeline.run(LENDING)  # silver exists before the column does: the next run is incremental

    writing = writer.start()
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as pg:
        pg.execute("alter table lending.facilities add column risk_grade text")
        second = Workload(settings.postgres, seed=5002).run(rate=50_000, duration_s=900, max_ops=OPERATIONS_PER_HALF)
        graded = pg.execute(
            "update lending.facilities set risk_grade = case when facility_id % 3 = 0 then 'A' else 'B' end"
            " where facility_id % 4 = 0"
        ).rowcount
    assert writer.terminate(writing) == 0, writer.logs()[-3000:]
    # settle drains up to the topics' ends as it finds them: the graded updates must be in Kafka by then
    isolated_source.wait_captured()

    operations = first.operations + second.operations
    assert operations.total() >= 2 * OPERATIONS_PER_HALF
    for kind in ("insert_customer", "update_customer", "rewrite_notes", "delete_customer", "insert_transaction"):
        assert operations[kind] > 0, f"the workload did no {kind}: {operations}"
    assert graded > 0

    report, _ = pipeline.settle(LENDING)
    assert not report.drift, describe(report)
    assert sorted(t.table for t in report.tables) == LENDING
    assert all(t.source_rows == t.silver_rows > 0 for t in report.tables), describe(report)
    facilities = next(c for c in pipeline.contracts() if c.qualified_name == "lending.facilities")
    assert "risk_grade" in [c.name for c in facilities.columns]

    results = json.loads((tmp_path / "transform" / "target" / "run_results.json").read_text())["results"]
    statuses = {r["unique_id"]: r["status"] for r in results}
    assert not {u: s for u, s in statuses.items() if s not in {"success", "pass"}}, statuses
    assert sum(u.startswith("test.") for u in statuses) > 20
    assert any(u.startswith("unit_test.") for u in statuses)
