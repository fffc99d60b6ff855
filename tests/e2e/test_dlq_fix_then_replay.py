"""Fix, then replay: records refused for a schema mismatch reach silver after the contract is updated.

The writer runs over contracts of the test's own (a copy of ``schemas/``), on a source of its own. A column
of ``lending.facilities`` changes type in PostgreSQL (``interest_rate numeric(7,4)`` → ``numeric(9,6)``) and
rows are updated with values only the new type holds: those change events go to the DLQ as
``schema_mismatch`` (the writer finds the change in the catalog) and silver misses the updates (verify finds
the drift). Then, as a user would: ``cdcflow schemas generate`` writes the next contract version,
``cdcflow dlq replay --reason schema_mismatch`` prints a plan id, ``--execute <plan id>`` replays it, the
writer (restarted on the new contract) lands the replayed records, bronze and silver widen the column in
place, and verify finds zero drift; ``cdcflow dlq list`` shows them replayed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from services.common.contracts import load_contracts
from services.common.kafka import read_topic
from services.common.replay import replay_topic
from services.common.settings import repo_root
from services.stack.workload import Workload
from tests.fixtures.pipeline import (
    WriterProcess,
    wait_for_log_event,
    wait_until_committed,
)
from tests.fixtures.source import AvroSource, IsolatedSource
from tests.fixtures.transform import describe

LENDING = ["lending.customers", "lending.facilities", "lending.transactions"]
CDCFLOW = str(Path(sys.executable).parent / "cdcflow")


@pytest.mark.parametrize("isolated_source", [None, AvroSource()], indirect=True, ids=["json", "avro"])
def test_schema_mismatch_fixed_then_replayed_leaves_zero_drift(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    settings = isolated_source.settings
    contracts_dir = tmp_path / "schemas"
    shutil.copytree(repo_root() / "schemas", contracts_dir)
    own = {
        "CDCFLOW_WRITER__CONTRACTS_DIR": str(contracts_dir),
        "CDCFLOW_LOADER__CONTRACTS_DIR": str(contracts_dir),
        "CDCFLOW_TRANSFORM__CONTRACTS_DIR": str(contracts_dir),
    }
    pipeline = isolated_source.pipeline(writer, tmp_path, writer_env=own, loader_env=own)
    env = pipeline.env

    def cdcflow(*args: str, **extra: str) -> str:
        done = subprocess.run(
            [CDCFLOW, *args], capture_output=True, text=True, check=False, timeout=300, env={**env, **extra}
        )
        assert done.returncode == 0, f"cdcflow {' '.join(args)}: {done.stdout[-2000:]} {done.stderr[-3000:]}"
        return done.stdout

    Workload(settings.postgres, seed=7001).run(rate=50_000, duration_s=300, max_ops=1_500)
    # a drain reads the topics' ends: the changes must be in Kafka by then, not still in Debezium
    isolated_source.wait_captured()
    pipeline.run(LENDING)

    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as pg:
        pg.execute("alter table lending.facilities alter column interest_rate type numeric(9,6)")
        graded = pg.execute(
            "update lending.facilities set interest_rate = interest_rate + 0.000001 where facility_id % 3 = 0"
        ).rowcount
    assert graded > 0
    isolated_source.wait_captured()
    pipeline.run(LENDING)
    before = pipeline.verify()
    assert before.drift, "the refused updates should be missing from silver"
    listed = json.loads(cdcflow("dlq", "list", "--group", writer.group, "--json"))["groups"][0]
    assert (listed["records"], listed["pending"]) == (graded, graded)
    assert {row["reason"] for row in listed["by"]} == {"schema_mismatch"}

    # the fix, as the README says: a new contract version from the live catalog
    cdcflow("schemas", "generate", "--directory", str(contracts_dir), CDCFLOW_CONNECT__CONNECTOR="lending")
    facilities = next(c for c in load_contracts(contracts_dir) if c.qualified_name == "lending.facilities")
    rate = next(c for c in facilities.columns if c.name == "interest_rate")
    assert (facilities.version, rate.precision, rate.scale) == (2, 9, 6)

    printed = cdcflow("dlq", "replay", "--group", writer.group, "--reason", "schema_mismatch")
    found = re.search(r"plan ([0-9a-f]{16}):", printed)
    assert found, printed
    cdcflow("dlq", "replay", "--group", writer.group, "--reason", "schema_mismatch", "--execute", found[1])

    ends: dict[tuple[str, int], int] = {}
    for message in read_topic(settings.kafka, replay_topic(writer.group)).messages:
        ends[(str(message.topic()), int(message.partition() or 0))] = int(message.offset() or 0) + 1
    assert sum(1 for _ in ends) > 0
    proc = writer.start()
    try:
        wait_until_committed(settings, writer.group, ends)
        wait_for_log_event(writer, proc, "writer.started")
    finally:
        assert writer.terminate(proc) == 0, writer.logs()[-3000:]

    report, _ = pipeline.settle(LENDING)
    assert not report.drift, describe(report)
    assert all(t.source_rows == t.silver_rows > 0 for t in report.tables), describe(report)
    listed = json.loads(cdcflow("dlq", "list", "--group", writer.group, "--json"))["groups"][0]
    assert (listed["records"], listed["replayed"], listed["pending"]) == (graded, graded, 0)
