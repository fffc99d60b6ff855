"""The enricher in enriched events per CPU-second, beside a naive per-event PostgreSQL lookup, in one run.

Under a prefix of its own it produces Debezium-shaped events (real events of the stack copied, rows and LSNs
rewritten): ``--table-rows`` customer and facility versions, a heartbeat, ``--events`` transactions of random
customers and facilities, a heartbeat. Transactions refer to customers and facilities the real lending tables
hold too, so the baseline's queries find rows. Then:

- **enricher** — ``python -m services.enricher`` with an empty store: the seconds from its start until its
  ``enricher.tables_caught_up`` log line are the rebuild of the table rows from their topics; its CPU time
  from there until its group has committed the end of every input partition gives enriched events per
  CPU-second (exactly once: Kafka transactions, the LMDB as-of join).
- **baseline** — what a per-event lookup does (at least once): read each transaction, look its customer and
  facility up in PostgreSQL (two indexed point queries on the real lending tables), produce the joined
  record, commit every 500 records. CPU time of this process plus that of its PostgreSQL backend.

    make bench-enricher        # = .venv/bin/python -m bench.enricher_bench [--events N] [--table-rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench.events import committed_all, cpu_seconds, end_offsets
from services.common.kafka import (
    TopicPartition,
    admin_client,
    consumer,
    ensure_topics,
    producer,
    read_record,
    topic_names,
    topic_watermarks,
)
from services.common.settings import Settings, load_settings
from services.stack.processes import die_with_parent

__all__ = ["main"]

_KEYS = {"customers": "customer_id", "facilities": "facility_id", "transactions": "transaction_id", "heartbeat": "id"}


def _topic(prefix: str, table: str) -> str:
    return f"{prefix}.{'cdcflow' if table == 'heartbeat' else 'lending'}.{table}"


def _template(settings: Settings, table: str) -> dict[str, Any]:
    topic = _topic(settings.kafka.topic_prefix, table)
    for partition, (low, high) in sorted(topic_watermarks(settings.kafka, topic).items()):
        for offset in range(high - 1, max(low, high - 50) - 1, -1):
            message = read_record(settings.kafka, topic, partition, offset)
            document = json.loads(message.value() or b"null") if message else None
            if document and document.get("after"):
                return dict(document)
    raise SystemExit(f"no {table} event to copy: is the stack up and the workload run?")


class _Events:
    def __init__(self, settings: Settings, prefix: str) -> None:
        self.prefix = prefix
        self.templates = {t: _template(settings, t) for t in _KEYS}
        ensure_topics(settings.kafka, [_topic(prefix, t) for t in _KEYS])
        self.out = producer(settings.kafka, **{"compression.type": "lz4", "linger.ms": 50, "batch.size": 1 << 20})
        self.lsn = 1_000

    def send(self, table: str, row: dict[str, Any]) -> None:
        self.lsn += 8
        event = dict(self.templates[table])
        event.update({"before": None, "after": {**event["after"], **row}, "op": "c"})
        event["source"] = {**event["source"], "lsn": self.lsn, "ts_ms": 1_790_000_000_000 + self.lsn}
        key = json.dumps({_KEYS[table]: row[_KEYS[table]]}).encode()
        while True:
            try:
                self.out.produce(_topic(self.prefix, table), key=key, value=json.dumps(event).encode())
                break
            except BufferError:
                self.out.poll(0.05)

    def flush(self) -> None:
        if self.out.flush(120):
            raise SystemExit("the benchmark events were not all delivered")


def _produce(settings: Settings, prefix: str, events: int, table_rows: int, ids: tuple[int, int]) -> None:
    made = _Events(settings, prefix)
    rng = random.Random(5)  # noqa: S311 - a repeatable workload
    half = table_rows // 2
    for n in range(1, half + 1):
        made.send("customers", {"customer_id": n, "status": rng.choice(["ACTIVE", "INACTIVE"])})
        made.send("facilities", {"facility_id": n, "status": "ACTIVE", "interest_rate": rng.randint(100, 2000) / 100})
    made.flush()
    made.send("heartbeat", {"id": 1})
    for n in range(1, events + 1):
        customer, facility = rng.randint(1, min(half, ids[0])), rng.randint(1, min(half, ids[1]))
        made.send("transactions", {"transaction_id": n, "customer_id": customer, "facility_id": facility})
    made.flush()
    made.send("heartbeat", {"id": 1})
    made.flush()


def _run_enricher(settings: Settings, prefix: str, folder: Path) -> tuple[float, float]:
    """``(rebuild seconds, CPU seconds of the join)``."""
    group = f"bench-enricher-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
        "CDCFLOW_ENRICHER__GROUP_ID": group,
        "CDCFLOW_ENRICHER__INSTANCE_ID": "bench",
        "CDCFLOW_ENRICHER__STATE_DIR": str(folder / "store"),
        "CDCFLOW_ENRICHER__HEALTH_PORT": "0",
        "CDCFLOW_LOG__FORMAT": "json",
    }
    ends = end_offsets(settings.kafka, _topic(prefix, "transactions"))
    log = folder / "enricher.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.enricher"],
            env=env,
            stdout=out,
            stderr=out,
            preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - an interrupted benchmark leaves no enricher
        )
    try:
        while b'"enricher.tables_caught_up"' not in log.read_bytes():
            if proc.poll() is not None:
                raise SystemExit(f"the enricher exited: {log.read_text()[-2000:]}")
            time.sleep(0.01)
        began = cpu_seconds(proc.pid)
        line = next(x for x in log.read_text().splitlines() if '"enricher.tables_caught_up"' in x)
        rebuild_s = float(json.loads(line)["seconds"])
        while not committed_all(settings.kafka, group, ends):
            time.sleep(0.2)
        return rebuild_s, cpu_seconds(proc.pid) - began
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _baseline(settings: Settings, prefix: str, events: int) -> float:
    """CPU seconds (this process and its PostgreSQL backend) of the per-event lookup over ``events``."""
    source = consumer(settings.kafka, f"bench-baseline-{uuid.uuid4().hex[:6]}")
    source.assign([TopicPartition(t, p, 0) for (t, p) in end_offsets(settings.kafka, _topic(prefix, "transactions"))])
    out = producer(settings.kafka, **{"linger.ms": 5})
    target = _topic(prefix, "baseline")
    ensure_topics(settings.kafka, [target])
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as pg:
        backend = int(pg.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        began, began_pg, done = time.process_time(), cpu_seconds(backend), 0
        while done < events:
            for message in source.consume(500, timeout=1.0):
                if done >= events or message.error() or not message.value():
                    continue
                row = json.loads(message.value() or b"")["after"]
                customer = pg.execute(
                    "select customer_type, status from lending.customers where customer_id = %s", (row["customer_id"],)
                ).fetchone()
                facility = pg.execute(
                    "select status, interest_rate from lending.facilities where facility_id = %s", (row["facility_id"],)
                ).fetchone()
                joined = {**row, "customer": customer, "facility": facility}
                out.produce(target, key=message.key(), value=json.dumps(joined, default=str).encode())
                out.poll(0)
                done += 1
                if done % 500 == 0:
                    source.commit(message=message, asynchronous=True)
        out.flush(60)
        cpu = time.process_time() - began + cpu_seconds(backend) - began_pg
    source.close()
    return cpu


def _delete_topics(settings: Settings, prefix: str) -> None:
    """The benchmark's topics, and the DLQ topics of its groups."""
    doomed = [*topic_names(settings.kafka, f"{prefix}."), *topic_names(settings.kafka, "_cdcflow.dlq.bench-enricher-")]
    if doomed:
        admin = admin_client(settings.kafka)  # held until the deletions are done: a dropped client cancels them
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()


def _id_ranges(settings: Settings) -> tuple[int, int]:
    with psycopg.connect(settings.postgres.dsn()) as pg:
        row = pg.execute(
            "select (select max(customer_id) from lending.customers), (select max(facility_id) from lending.facilities)"
        ).fetchone()
    assert row is not None
    return int(row[0] or 1), int(row[1] or 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--table-rows", type=int, default=200_000)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    args = parser.parse_args()
    settings = load_settings()
    prefix = f"benchenr{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    _produce(settings, prefix, args.events, args.table_rows, _id_ranges(settings))
    print(
        f"produced {args.table_rows:,} table rows and {args.events:,} transactions in "
        f"{time.monotonic() - started:.0f}s under {prefix}"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="enricher-bench-") as folder:
            rebuild_s, enricher_cpu = _run_enricher(settings, prefix, Path(folder))
        baseline_cpu = _baseline(settings, prefix, args.baseline_events)
    finally:
        _delete_topics(settings, prefix)
    enricher_rate, baseline_rate = args.events / enricher_cpu, args.baseline_events / baseline_cpu
    print(f"rebuild   {args.table_rows:,} table rows from their topics in {rebuild_s:.1f}s")
    print(
        f"enricher  {enricher_rate:>9,.0f} enriched events per CPU-second ({args.events:,} in {enricher_cpu:.2f} CPU-s)"
    )
    print(
        f"baseline  {baseline_rate:>9,.0f} enriched events per CPU-second ({args.baseline_events:,} in "
        f"{baseline_cpu:.2f} CPU-s, client and PostgreSQL backend)"
    )
    print(f"ratio     {enricher_rate / baseline_rate:.1f}x")


if __name__ == "__main__":
    main()
