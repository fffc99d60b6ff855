"""Against the real stack: poison records go to the DLQ, unchanged and explained; the writer never stops.

Invariant 4. The test owns its topics: the writer runs with a topic prefix of its own, so it reads only what
the test produced — real Debezium events and synthetic ones, interleaved with many kinds of bad record and
with tombstones. Every good record must land in the lake (by offset and by value), every bad one must be in
``_cdcflow.dlq.<group>`` exactly once with its original key, value and headers plus the error headers (the
original timestamp among them; the record itself is stamped when it was dead-lettered), and a metric must
count it.
"""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.contracts import Column, TableContract, load_contracts
from services.common.debezium import UNAVAILABLE_VALUE, days_to_date, micros_to_datetime, variable_scale_decimal
from services.common.debezium.records import Reason
from services.common.kafka import Message, ensure_topics
from services.common.lake import LakeLayout, NotALakeFileError
from services.common.settings import Settings, repo_root
from services.stack.runtime import Stack
from tests.fixtures.net import free_port
from tests.fixtures.pipeline import (
    Coordinate,
    WriterProcess,
    committed_offsets,
    dlq_coordinate,
    dlq_messages,
    header_dict,
    lake_coordinates,
    partition_ends,
    produce_in_order,
    read_lake_table,
    real_events,
    wait_for_log_event,
    wait_until,
    wait_until_committed,
    writer_log,
)

# the writer's core behaviour holds on both of its paths (tests/fixtures/pipeline.py: writer_path)
pytestmark = pytest.mark.usefixtures("writer_path")

SEED = 1_337
TABLES = ("customers", "facilities", "transactions")
MAX_VALUE_BYTES = 4096
REAL_PER_TABLE = 8
SYNTHETIC_GOOD = 12
PARTITIONS_USED = 3  # fewer partitions than the topics have: good and bad records share poll batches
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AMOUNT = "@@AMOUNT@@"
_REFERENCE = "@@REFERENCE@@"

HeaderList = list[tuple[str, str | bytes | None]]


@dataclass
class Planned:
    """One record the test produces, and what must become of it."""

    kind: str  # "good", "tombstone" or the kind of bad record
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: HeaderList
    timestamp_ms: int
    reason: str | None = None  # the DLQ reason a bad record must carry
    hint: str = ""  # something the DLQ error message must mention
    table: str = ""  # the contract a good record is checked against
    offset: int = -1

    @property
    def coordinate(self) -> Coordinate:
        return self.topic, self.partition, self.offset


# --- building events -----------------------------------------------------------------------------------


class Transactions:
    """Debezium JSON change events of lending.transactions (decimals as JSON numbers, like JsonConverter)."""

    def __init__(self, rng: random.Random) -> None:
        self._next_id = rng.randrange(10**12, 2 * 10**12)

    def document(self) -> dict[str, Any]:
        self._next_id += 1
        now_us = time.time_ns() // 1_000
        return {
            "before": None,
            "after": {
                "transaction_id": self._next_id,
                "facility_id": 7,
                "customer_id": 3,
                "transaction_type": "PAYMENT",
                "amount": _AMOUNT,
                "currency": "EUR",
                "exchange_rate": {"scale": 4, "value": "ALxi"},  # 4.8226 as Debezium's VariableScaleDecimal
                "booked_at": "2026-05-06T07:08:09.123456Z",
                "value_date": 20_579,
                "reference": f"poison-{self._next_id}",
            },
            "source": {
                "version": "3.4.3.Final",
                "connector": "postgresql",
                "name": "poison",
                "ts_ms": now_us // 1_000,
                "ts_us": now_us,
                "snapshot": "false",
                "db": "lending",
                "schema": "lending",
                "table": "transactions",
                "txId": 9_000 + self._next_id % 1_000,
                "lsn": 50_000_000 + self._next_id % 10**6,
            },
            "transaction": None,
            "op": "c",
            "ts_ms": now_us // 1_000,
        }

    def event(self, mutate: Callable[[dict[str, Any]], object] | None = None, amount: str = "1234.50") -> bytes:
        document = self.document()
        if mutate is not None:
            mutate(document)
        return json.dumps(document, separators=(",", ":")).replace(f'"{_AMOUNT}"', amount).encode()


def _with_reference(reference: bytes) -> Callable[[Transactions], bytes]:
    def build(tx: Transactions) -> bytes:
        return tx.event(lambda d: d["after"].update(reference=_REFERENCE)).replace(_REFERENCE.encode(), reference)

    return build


def _truncated(tx: Transactions) -> bytes:
    value = tx.event()
    return value[: len(value) // 2]


def _after(**changes: object) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["after"].update(changes)


@dataclass(frozen=True, slots=True)
class BadKind:
    topic: str  # "transactions", "facilities", "unknown", "dots", "depth", "empty"
    build: Callable[[Transactions], bytes]
    reason: str
    hint: str


def _bad_kinds(prefix: str, unknown_table: str) -> dict[str, BadKind]:
    return {
        "malformed_json": BadKind(
            "transactions", lambda tx: b'{"before":null,"after":{oops},"op":"c"}', Reason.MALFORMED_JSON, ""
        ),
        "truncated": BadKind("transactions", _truncated, Reason.MALFORMED_JSON, ""),
        "not_an_object": BadKind("facilities", lambda tx: b"[1,2,3]", Reason.MALFORMED_JSON, "object"),
        "invalid_utf8": BadKind("transactions", _with_reference(b"r\xff\xfe-\xc3("), Reason.INVALID_UTF8, "utf-8"),
        "wrong_type": BadKind(
            "transactions", lambda tx: tx.event(_after(customer_id="three")), Reason.WRONG_TYPE, "customer_id"
        ),
        "missing_source": BadKind(
            "transactions", lambda tx: tx.event(lambda d: d.pop("source")), Reason.MISSING_SOURCE, "source"
        ),
        "unknown_op": BadKind("transactions", lambda tx: tx.event(lambda d: d.update(op="x")), Reason.UNKNOWN_OP, "op"),
        "missing_image": BadKind(
            "transactions", lambda tx: tx.event(lambda d: d.update(after=None)), Reason.MISSING_IMAGE, "image"
        ),
        "missing_key": BadKind(
            "transactions", lambda tx: tx.event(_after(transaction_id=None)), Reason.MISSING_KEY, "transaction_id"
        ),
        "oversized": BadKind(
            "transactions",
            lambda tx: tx.event(_after(reference="R" * (MAX_VALUE_BYTES + 100))),
            Reason.OVERSIZED,
            str(MAX_VALUE_BYTES),
        ),
        # NUMERIC(20,2) holds 18 integer digits: 21 overflow it
        "decimal_overflow": BadKind(
            "transactions",
            lambda tx: tx.event(amount="123456789012345678901.00"),
            Reason.DECIMAL_OVERFLOW,
            "decimal",
        ),
        "decimal_scale": BadKind(
            "transactions", lambda tx: tx.event(amount="10.001"), Reason.DECIMAL_OVERFLOW, "decimal"
        ),
        "unknown_column": BadKind(
            "transactions", lambda tx: tx.event(_after(poison_column=1)), Reason.SCHEMA_MISMATCH, "poison_column"
        ),
        "unknown_table": BadKind("unknown", lambda tx: tx.event(), Reason.UNKNOWN_TABLE, unknown_table),
        "unsafe_dots": BadKind("dots", lambda tx: tx.event(), Reason.UNSAFE_NAME, f"{prefix}.lending.x..y"),
        "unsafe_depth": BadKind("depth", lambda tx: tx.event(), Reason.UNSAFE_NAME, f"{prefix}.a.b.c"),
        "unsafe_empty": BadKind("empty", lambda tx: tx.event(), Reason.UNSAFE_NAME, f"{prefix}.."),
    }


def _real_events(settings: Settings, table: str, count: int) -> list[Message]:
    """Up to ``count`` real change events of ``table`` from the shared topic (small enough to pass the limit)."""
    found = real_events(settings, table, count, per_partition=200)
    return [m for m in found if len(m.value() or b"") <= MAX_VALUE_BYTES - 1024][:count]


# --- checking lake rows -------------------------------------------------------------------------------


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "decimal": lambda wire: Decimal(str(wire)),
    "variable_decimal": variable_scale_decimal,
    "date": days_to_date,
    "timestamp": lambda wire: micros_to_datetime(wire).replace(tzinfo=None),  # wall time, no zone
    "timestamptz": datetime.fromisoformat,
}
_AS_IS = frozenset({"int16", "int32", "int64", "boolean", "string", "uuid", "json"})


def _expected(column: Column, wire: Any) -> Any:
    """The lake value of a Debezium JSON value (decimals read as Decimal)."""
    if wire is None or column.semantic in _AS_IS:
        return wire
    if column.semantic not in _CONVERT:
        pytest.fail(f"no expectation for semantic type {column.semantic} of column {column.name}")
    return _CONVERT[column.semantic](wire)


def _assert_row_matches(row: dict[str, Any], planned: Planned, contract: TableContract) -> None:
    assert planned.value is not None
    document = json.loads(planned.value, parse_float=Decimal)
    op = document["op"]
    image = document["before"] if op == "d" else document["after"]
    where = f"{planned.kind} {contract.table} record at {planned.coordinate}"
    source = document["source"]
    assert row["_op"] == op, where
    assert row["_source_lsn"] == source["lsn"], where
    assert row["_source_ts"] == EPOCH + timedelta(microseconds=source.get("ts_us") or source["ts_ms"] * 1000), where
    assert row["_kafka_timestamp"] == EPOCH + timedelta(milliseconds=planned.timestamp_ms), where
    if op == "t":  # a truncate carries no row image: every column is NULL
        assert all(row[c.name] is None for c in contract.columns), where
        return
    key_only = op == "d" and contract.replica_identity != "full"  # the rest of the before image is filler
    for column in contract.columns:
        if key_only and column.name not in contract.primary_key:
            continue
        wire = image.get(column.name)
        if wire == UNAVAILABLE_VALUE:
            assert row[column.name] is None, (where, column.name)
            assert column.name in row["_unavailable_columns"], (where, column.name)
            continue
        assert row[column.name] == _expected(column, wire), (where, column.name)


# --- the writer's side --------------------------------------------------------------------------------


def _metrics_url(log: str) -> str:
    for line in log.splitlines():
        if line.startswith("{") and (entry := json.loads(line)).get("event") == "writer.health":
            url = str(entry["url"])
            assert url.startswith("http://127.0.0.1:"), url
            return url
    raise AssertionError("the writer logged no writer.health line with its /metrics URL")


def _scrape(url: str) -> dict[str, Counter[tuple[str, ...]]]:
    """Counter samples by metric name, keyed by their label values (sorted by label name)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, Counter[tuple[str, ...]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples.setdefault(sample.name, Counter())[labels] += int(sample.value)
    return samples


def _plan(settings: Settings, prefix: str, topics: dict[str, str], unknown_table: str) -> list[Planned]:
    """Good, bad and tombstone records, shuffled (seeded) over a few partitions of each topic."""
    rng = random.Random(SEED)
    tx = Transactions(rng)
    base_ms = time.time_ns() // 1_000_000 - 120_000
    plan: list[Planned] = []

    def add(kind: str, topic: str, key: bytes | None, value: bytes | None, headers: HeaderList) -> Planned:
        planned = Planned(kind, topic, 0, key, value, headers, base_ms + len(plan))
        plan.append(planned)
        return planned

    for table in TABLES:
        for real in _real_events(settings, table, REAL_PER_TABLE):
            raw = real.headers() or []
            original: HeaderList = list(raw.items() if isinstance(raw, dict) else raw)
            good = add("good", topics[table], real.key(), real.value(), [*original, ("poison.kind", b"good")])
            good.table = table
    for _ in range(SYNTHETIC_GOOD):
        value = tx.event()
        key = json.dumps({"transaction_id": json.loads(value)["after"]["transaction_id"]}).encode()
        good = add("good", topics["transactions"], key, value, [("poison.kind", b"good")])
        good.table = "transactions"
    for kind, bad in _bad_kinds(prefix, unknown_table).items():
        headers: HeaderList = [
            ("poison.kind", kind.encode()),
            ("poison.id", uuid.uuid4().hex.encode()),
            ("poison.raw", b"\x00\xff"),
        ]
        planned = add(kind, topics[bad.topic], f'{{"poison":"{kind}"}}'.encode(), bad.build(tx), headers)
        planned.reason, planned.hint = bad.reason, bad.hint
    for topic in ("transactions", "transactions", "customers", "unknown", "dots"):
        add("tombstone", topics[topic], b'{"id":1}', None, [("poison.kind", b"tombstone")])

    rng.shuffle(plan)
    for planned in plan:
        planned.partition = rng.randrange(PARTITIONS_USED)
    return plan


def _files_outside_the_layout(base: Path, lake_root: Path, prefix: str) -> list[str]:
    """Files under the test's folder that are neither logs, the writer's own state (crash notes), nor lake files
    in the documented layout."""
    strays = []
    for path in sorted(base.rglob("*")):
        if path.is_dir() or path.parent == base / "logs" or path.is_relative_to(base / "writer-state"):
            continue
        relative = path.relative_to(lake_root).as_posix() if path.is_relative_to(lake_root) else None
        if relative is None or not _in_layout(relative, prefix):
            strays.append(path.relative_to(base).as_posix())
    return strays


def _in_layout(relative: str, prefix: str) -> bool:
    try:
        slot = LakeLayout.parse(relative)
    except NotALakeFileError:
        return False
    return slot.topic_prefix == prefix and slot.last_offset is not None and slot.schema == "lending"


# --- the test -----------------------------------------------------------------------------------------


def test_poison_records_go_to_the_dlq_unchanged_and_the_writer_keeps_going(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    began_ms = time.time_ns() // 1_000_000
    prefix = f"poison{uuid.uuid4().hex[:8]}"
    unknown_table = f"unknown_{uuid.uuid4().hex[:6]}"
    topics = {table: f"{prefix}.lending.{table}" for table in TABLES}
    topics |= {
        "unknown": f"{prefix}.lending.{unknown_table}",
        "dots": f"{prefix}.lending.x..y",
        "depth": f"{prefix}.a.b.c",
        "empty": f"{prefix}..",
    }
    # before the writer starts: a pattern subscription sees new topics only at its next metadata refresh
    ensure_topics(settings.kafka, sorted(topics.values()))
    contracts = {c.table: c for c in load_contracts(repo_root() / "schemas") if c.schema == "lending"}

    writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
            "CDCFLOW_WRITER__MAX_VALUE_BYTES": str(MAX_VALUE_BYTES),
            # 0 turns the health server off (services/consumer/__main__.py), so the test picks a free port
            "CDCFLOW_WRITER__HEALTH_PORT": str(free_port()),
        }
    )
    proc = writer.start()
    wait_for_log_event(writer, proc, "writer.assigned")

    plan = _plan(settings, prefix, topics, unknown_table)
    produce_in_order(settings, plan)
    good = [p for p in plan if p.kind == "good"]
    bad = [p for p in plan if p.reason is not None]
    tombstones = [p for p in plan if p.kind == "tombstone"]
    assert len({p.kind for p in bad}) >= 10
    assert len(good) >= SYNTHETIC_GOOD

    ends = partition_ends(settings, sorted(topics.values()))
    assert sum(ends.values()) == len(plan)
    wait_until_committed(settings, writer.group, ends, timeout_s=90)

    # every good record is in the lake exactly once, with its values; nothing else is
    lake = lake_coordinates(writer.lake_root, prefix)
    assert lake.duplicates == 0
    assert set(lake.rows) == {p.coordinate for p in good}
    for table in TABLES:
        rows = read_lake_table(writer.lake_root, prefix, f"lending.{table}").to_pylist()
        by_coordinate = {(r["_kafka_topic"], r["_kafka_partition"], r["_kafka_offset"]): r for r in rows}
        for planned in (p for p in good if p.table == table):
            _assert_row_matches(by_coordinate[planned.coordinate], planned, contracts[table])

    # every bad record is in the DLQ exactly once: original key, value, headers and timestamp (a header), plus why
    dlq = dlq_messages(settings, writer.group)
    by_source = Counter(dlq_coordinate(m) for m in dlq)
    assert {c: n for c, n in by_source.items() if n > 1} == {}
    assert set(by_source) == {p.coordinate for p in bad}
    worker = f"{socket.gethostname()}-{proc.pid}"
    dead = {dlq_coordinate(m): m for m in dlq}
    now_ms = time.time_ns() // 1_000_000
    for planned in bad:
        message = dead[planned.coordinate]
        where = f"{planned.kind} at {planned.coordinate}"
        assert message.key() == planned.key, where
        assert message.value() == planned.value, where
        assert began_ms <= message.timestamp()[1] <= now_ms, where  # the DLQ's retention counts from then
        headers = message.headers() or []
        assert list(headers)[: len(planned.headers)] == planned.headers, where
        error = {k: v.decode(errors="replace") for k, v in header_dict(message).items() if v is not None}
        assert error["cdcflow.error.reason"] == planned.reason, where
        assert error["cdcflow.error.class"], where
        assert error["cdcflow.error.stage"], where
        assert error["cdcflow.error.message"], where
        assert planned.hint.lower() in error["cdcflow.error.message"].lower(), (where, error["cdcflow.error.message"])
        assert error["cdcflow.source.topic"] == planned.topic, where
        assert error["cdcflow.source.partition"] == str(planned.partition), where
        assert error["cdcflow.source.offset"] == str(planned.offset), where
        assert error["cdcflow.source.timestamp"] == str(planned.timestamp_ms), where
        assert error["cdcflow.worker"] == worker, where
        assert began_ms <= int(error["cdcflow.error.time"]) <= now_ms, where

    # produced = landed + dead-lettered + tombstones, and no record is in two places
    landed, dead_lettered = set(lake.rows), set(by_source)
    skipped = {p.coordinate for p in tombstones}
    assert landed.isdisjoint(dead_lettered)
    assert landed.isdisjoint(skipped)
    assert dead_lettered.isdisjoint(skipped)
    assert landed | dead_lettered | skipped == {p.coordinate for p in plan}
    assert len(landed) + len(dead_lettered) + len(skipped) == len(plan)

    # nothing was written outside the lake root, nor anywhere but the documented layout inside it
    assert _files_outside_the_layout(writer.lake_root.parent, writer.lake_root, prefix) == []
    assert {p.name for p in writer.lake_root.parent.iterdir()} <= {"lake", "logs", "writer-state"}

    # the writer never stopped on bad input, and its metrics count what it dead-lettered
    assert proc.poll() is None, f"the writer stopped (exit {proc.returncode}):\n{writer_log(writer, proc)}"
    metrics = _scrape(_metrics_url(writer_log(writer, proc)))
    dlq_metric = metrics.get("cdcflow_records_dlq_total", Counter())
    by_reason: Counter[str] = Counter()
    by_topic_reason: Counter[tuple[str, str]] = Counter()
    for labels, value in dlq_metric.items():
        label = dict(part.split("=", 1) for part in labels)
        by_reason[label["reason"]] += value
        by_topic_reason[(label["topic"], label["reason"])] += value
    assert +by_reason == Counter(str(p.reason) for p in bad)
    assert +by_topic_reason == Counter((p.topic, str(p.reason)) for p in bad)
    skipped_metric = metrics.get("cdcflow_tombstones_skipped_total", Counter())
    assert +Counter({labels[0].split("=", 1)[1]: n for labels, n in skipped_metric.items()}) == Counter(
        p.topic for p in tombstones
    )

    assert writer.terminate(proc, timeout_s=settings.writer.grace_s) == 0
    print(
        f"\n[writer poison] produced={len(plan)} good={len(good)} bad={len(bad)} kinds={len({p.kind for p in bad})} "
        f"tombstones={len(tombstones)} landed={len(landed)} dlq={len(dead_lettered)} "
        f"dlq_by_reason={dict(sorted(by_reason.items()))}"
    )


def test_a_json_null_value_at_the_head_of_a_batch_does_not_crash_the_writer(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    """The four bytes ``null`` are valid JSON but no event: they belong in the DLQ, like any other non-object."""
    prefix = f"poison{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    ensure_topics(settings.kafka, [topic])
    tx = Transactions(random.Random(SEED))
    base_ms = time.time_ns() // 1_000_000
    headers: HeaderList = [("poison.kind", b"json_null")]
    poison = Planned("json_null", topic, 0, b'{"poison":"json_null"}', b"null", headers, base_ms, Reason.MALFORMED_JSON)
    plan = [poison]
    for index in range(3):
        value = tx.event()
        plan.append(Planned("good", topic, 0, b"{}", value, [("poison.kind", b"good")], base_ms + 1 + index))
    produce_in_order(settings, plan)  # before the writer starts: the null heads its first batch of the partition

    writer.env_overrides["CDCFLOW_KAFKA__TOPIC_PREFIX"] = prefix
    proc = writer.start()
    end = partition_ends(settings, [topic])[(topic, 0)]
    assert end == len(plan)

    def drained_or_dead() -> bool:
        return proc.poll() is not None or committed_offsets(settings, writer.group, [(topic, 0)])[(topic, 0)] >= end

    wait_until("the writer to commit the partition's end, or to die", drained_or_dead, timeout_s=90)
    assert proc.poll() is None, (
        f"the writer died on a record whose value is `null` (exit {proc.returncode}; -11 is SIGSEGV):\n"
        + writer_log(writer, proc)[-3000:]
    )
    (dead,) = dlq_messages(settings, writer.group)
    assert dlq_coordinate(dead) == poison.coordinate
    assert header_dict(dead)["cdcflow.error.reason"] == Reason.MALFORMED_JSON.encode()
    assert set(lake_coordinates(writer.lake_root, prefix).rows) == {p.coordinate for p in plan[1:]}
    assert writer.terminate(proc, timeout_s=settings.writer.grace_s) == 0
