"""Against the real stack: records that used to kill the writer are dead-lettered, and the writer stays up.

Issue 21's records — 20,000 levels of nesting, an escaped key name, deep arrays, a 5,000-digit number, an
invalid UTF-8 key inside ``after``, a ``ts_ms`` in the year 33658, VariableScaleDecimal scales of -10⁷ and
1,297,587,212, and PostgreSQL's ``infinity`` in a timestamp column — are produced into captured topics while
a small workload runs, between its real change events. The source is a database of its own with its own
connector and topics (``isolated_source``), so nothing hostile stays in the topics other tests read.

The writer must keep its one process the whole time; each hostile record must be in the DLQ exactly once with
a reason and its original bytes; every offset must be a lake row, a tombstone or a DLQ record; and after the
loader and the transform, ``verify`` must find silver equal to the source (a hostile record that became a row
would be a row PostgreSQL does not have).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.contracts import TableContract, load_contracts
from services.common.debezium.records import Reason
from services.common.kafka import ensure_topics
from services.common.settings import repo_root
from tests.fixtures.net import free_port
from tests.fixtures.pipeline import (
    Coordinate,
    WorkloadThread,
    WriterProcess,
    audit_offsets,
    dlq_coordinate,
    dlq_messages,
    header_dict,
    partition_ends,
    produce_in_order,
    wait_for_log_event,
    wait_until_committed,
    writer_log,
)
from tests.fixtures.source import IsolatedSource
from tests.fixtures.transform import Pipeline, describe

SEED = 2_100
TABLES = ("customers", "facilities", "transactions")
WORKLOAD_S = 20.0
WORKLOAD_RATE = 25.0
# Debezium's value for PostgreSQL's `infinity` in a timestamp column (PGStatement.DATE_POSITIVE_INFINITY)
PG_INFINITY = 9_223_372_036_825_200_000
YEAR_33658_MS = 10**15
_HOLE = "@@HOLE@@"


@dataclass(frozen=True, slots=True)
class Hostile:
    table: str
    build: Callable[[dict[str, Any]], bytes]  # from a valid event of the table
    reasons: frozenset[str]  # what the DLQ may say about it


@dataclass
class Produced:
    kind: str
    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    offset: int = -1

    @property
    def coordinate(self) -> Coordinate:
        return self.topic, self.partition, self.offset


# --- the records -------------------------------------------------------------------------------------------


def _text(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def _hole(event: dict[str, Any], where: str, column: str, raw: bytes) -> bytes:
    """``event`` with ``raw`` written as the value of ``where.column``, byte for byte."""
    event[where][column] = _HOLE
    return _text(event).replace(f'"{_HOLE}"'.encode(), raw)


def _with(where: str, **changes: Any) -> Callable[[dict[str, Any]], bytes]:
    def build(event: dict[str, Any]) -> bytes:
        event[where].update(changes)
        return _text(event)

    return build


def _nested(depth: int) -> Callable[[dict[str, Any]], bytes]:
    return lambda event: _hole(event, "after", "reference", b"[" * depth + b"1" + b"]" * depth)


def _huge_amount(event: dict[str, Any]) -> bytes:
    return _hole(event, "after", "amount", b"9" * 5_000)


def _invalid_utf8_key(event: dict[str, Any]) -> bytes:
    value = _text(event)
    return value.replace(b'"reference":', b'"ref\xff\xfeerence":', 1)


def _source_in_year_33658(event: dict[str, Any]) -> bytes:
    event["source"].update(ts_ms=YEAR_33658_MS, ts_us=YEAR_33658_MS * 1_000, ts_ns=None)
    event["ts_ms"] = YEAR_33658_MS
    return _text(event)


def _hostile_records() -> dict[str, Hostile]:
    too_deep = frozenset({Reason.TOO_DEEP, Reason.MALFORMED_JSON})
    out_of_range = frozenset({Reason.OUT_OF_RANGE, Reason.DECIMAL_OVERFLOW})
    return {
        "nesting_20000": Hostile("transactions", _nested(20_000), too_deep),
        "escaped_key": Hostile("transactions", _with("after", **{'a"b': 1}), frozenset({Reason.SCHEMA_MISMATCH})),
        "deep_arrays": Hostile("transactions", _nested(3_000), too_deep),
        "digits_5000": Hostile(
            "transactions",
            _huge_amount,
            frozenset({Reason.OUT_OF_RANGE, Reason.DECIMAL_OVERFLOW, Reason.MALFORMED_JSON}),
        ),
        "invalid_utf8_key": Hostile(
            "transactions", _invalid_utf8_key, frozenset({Reason.INVALID_UTF8, Reason.SCHEMA_MISMATCH})
        ),
        "ts_ms_year_33658": Hostile("transactions", _source_in_year_33658, frozenset({Reason.OUT_OF_RANGE})),
        "scale_minus_1e7": Hostile(
            "transactions", _with("after", exchange_rate={"scale": -(10**7), "value": "AQ=="}), out_of_range
        ),
        "scale_1297587212": Hostile(
            "transactions", _with("after", exchange_rate={"scale": 1_297_587_212, "value": "AQ=="}), out_of_range
        ),
        "infinity_timestamp": Hostile(
            "facilities", _with("after", last_reviewed_at=PG_INFINITY), frozenset({Reason.OUT_OF_RANGE})
        ),
    }


def _source(table: str, now_us: int, serial: int) -> dict[str, Any]:
    return {
        "version": "3.4.3.Final",
        "connector": "postgresql",
        "name": "hostile",
        "ts_ms": now_us // 1_000,
        "snapshot": "false",
        "db": "lending",
        "ts_us": now_us,
        "ts_ns": now_us * 1_000,
        "schema": "lending",
        "table": table,
        "txId": 900_000 + serial,
        "lsn": 900_000_000 + serial,
        "xmin": None,
    }


def _valid_event(table: str, serial: int) -> dict[str, Any]:
    """A create of a row the source does not have: if it were landed, verify would see the extra row."""
    now_us = time.time_ns() // 1_000
    row_id = 9 * 10**15 + serial
    after: dict[str, Any]
    if table == "transactions":
        after = {
            "transaction_id": row_id,
            "facility_id": 1,
            "customer_id": 1,
            "transaction_type": "PAYMENT",
            "amount": 12.5,
            "currency": "EUR",
            "exchange_rate": {"scale": 4, "value": "ALxi"},
            "booked_at": "2026-05-06T07:08:09.123456Z",
            "value_date": 20_579,
            "reference": f"hostile-{serial}",
        }
    else:
        after = {
            "facility_id": row_id,
            "customer_id": 1,
            "facility_type": "TERM_LOAN",
            "principal_amount": 1000.0,
            "outstanding_balance": 1000.0,
            "interest_rate": 5.5,
            "status": "ACTIVE",
            "originated_on": 18_735,
            "maturity_date": 23_480,
            "last_reviewed_at": None,
            "created_at": "2026-12-02T06:37:41.770024Z",
            "updated_at": "2026-12-02T06:37:41.770024Z",
        }
    return {
        "before": None,
        "after": after,
        "source": _source(table, now_us, serial),
        "transaction": None,
        "op": "c",
        "ts_ms": now_us // 1_000,
    }


# --- producing while the workload runs ---------------------------------------------------------------------


def _plan(prefix: str, partitions: int) -> list[Produced]:
    rng = random.Random(SEED)
    planned = []
    for serial, (kind, hostile) in enumerate(_hostile_records().items()):
        value = hostile.build(_valid_event(hostile.table, serial))
        headers: list[tuple[str, str | bytes | None]] = [
            ("hostile.kind", kind.encode()),
            ("hostile.id", uuid.uuid4().hex.encode()),
        ]
        key = json.dumps({"id": serial}).encode()
        topic = f"{prefix}.lending.{hostile.table}"
        planned.append(Produced(kind, topic, rng.randrange(partitions), key, value, headers))
    rng.shuffle(planned)
    return planned


def _contracts() -> list[TableContract]:
    return [c for c in load_contracts(repo_root() / "schemas") if c.schema == "lending" and c.table in TABLES]


# --- the test ------------------------------------------------------------------------------------------------


def test_hostile_records_are_dead_lettered_and_the_writer_stays_up(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    source = isolated_source.settings
    prefix = source.kafka.topic_prefix
    topics = [f"{prefix}.lending.{table}" for table in TABLES]
    # before the writer starts: a pattern subscription sees new topics only at its next metadata refresh
    ensure_topics(source.kafka, topics)
    env = isolated_source.attach(writer, tmp_path, {"CDCFLOW_WRITER__HEALTH_PORT": str(free_port())})
    proc = writer.start()
    wait_for_log_event(writer, proc, "writer.assigned")

    workload = WorkloadThread(source, seed=SEED, rate=WORKLOAD_RATE, duration_s=WORKLOAD_S)
    workload.start()
    plan = _plan(prefix, source.kafka.topic_partitions)
    time.sleep(WORKLOAD_S / 4)  # real change events before the hostile ones ...
    for record in plan:  # ... and between them
        produce_in_order(source, [record])
        time.sleep(WORKLOAD_S / 2 / len(plan))
        assert proc.poll() is None, f"the writer died after {record.kind}:\n{writer_log(writer, proc)[-4000:]}"
    workload.join(timeout=WORKLOAD_S * 4)
    assert workload.error is None, workload.error
    assert workload.result is not None

    ends = partition_ends(source, topics)
    wait_until_committed(source, writer.group, ends, timeout_s=180)
    assert proc.poll() is None, f"the writer stopped (exit {proc.returncode}):\n{writer_log(writer, proc)[-4000:]}"
    assert writer.procs == [proc], "the writer was restarted"

    # each hostile record is in the DLQ exactly once, with its original bytes and a reason for it
    dead = dlq_messages(source, writer.group)
    by_coordinate = Counter(dlq_coordinate(m) for m in dead)
    assert {c: n for c, n in by_coordinate.items() if n > 1} == {}
    planned = {r.coordinate: r for r in plan}
    assert set(by_coordinate) <= set(planned), "the DLQ holds records that are not hostile"
    expected = _hostile_records()
    found: dict[str, str | None] = dict.fromkeys(expected)  # None: not in the DLQ
    for message in dead:
        record = planned[dlq_coordinate(message)]
        error = {k: (v or b"").decode(errors="replace") for k, v in header_dict(message).items()}
        assert message.value() == record.value, record.kind
        assert message.key() == record.key, record.kind
        assert error["cdcflow.error.message"], (record.kind, error)
        found[record.kind] = error["cdcflow.error.reason"]
    unexpected = {kind: reason for kind, reason in found.items() if reason not in expected[kind].reasons}
    assert unexpected == {}, f"hostile records without an expected DLQ reason (None: not dead-lettered): {unexpected}"

    # every offset of the captured topics is a lake row, a tombstone or a DLQ record, exactly once
    audit = audit_offsets(source, writer.group, writer.lake_root, prefix, ends)
    assert audit.missing == [], audit.summary()
    assert audit.duplicates == 0, audit.summary()
    assert audit.dlq_duplicates == 0, audit.summary()
    assert audit.dead_lettered == len(plan), audit.summary()
    assert audit.in_lake >= workload.result.total // 2, audit.summary()
    assert writer.terminate(proc) == 0
    print(f"\n[writer hostile] {audit.summary()}")

    # loaded and transformed, silver equals the source: no hostile record became a row
    report, _ = Pipeline(source, writer, env, _contracts).settle([f"lending.{t}" for t in TABLES])
    assert not report.drift, describe(report)
    assert all(t.source_rows == t.silver_rows > 0 for t in report.tables), describe(report)
