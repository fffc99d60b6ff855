"""Chaos on the whole pipeline: kill -9, broker and Connect restarts and poison, then zero drift.

While a seeded workload writes to a source of the test's own (``isolated_source``: its own database,
connector, slot and topics), the lake writer and the loader run as real child processes, and in turn:

- the writer is killed with SIGKILL three times and the loader three times, each at a random moment, and
  started again;
- a zombie writer: a second writer of the group is frozen (SIGSTOP) until the group has given its
  partitions back to the first, then thawed — it flushes what it held and tries to commit, as a writer does
  whose flush outlasted the session during a storage slowdown — and stopped;
- the Kafka broker is stopped and started once, Kafka Connect once and PostgreSQL once (with the workload
  paused around it), through the stack's own code (``Stack.kafka`` / ``Stack.connect`` /
  ``Stack.postgres``: SIGTERM by PID or ``pg_ctl stop``, then the same start as ``cdcflow stack up``);
- 20 poison records (malformed or truncated JSON, invalid UTF-8, not an object, an unknown op, no source
  block, no row image, a key of the wrong type) are produced into the captured topics, in two waves.

Then the workload stops and the pipeline drains, loads, runs ``dbt build`` and ``verify``. Outcomes:

- ``verify`` finds zero drift on every captured table;
- no Kafka coordinate ``(topic, partition, offset)`` is in bronze twice;
- every offset of every captured partition is a bronze row, a DLQ record or a tombstone (Debezium's null
  value after a delete, which the design skips and counts) — and the DLQ holds exactly the 20 poison records,
  each of them once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.kafka import admin_client, producer
from services.common.settings import Settings
from services.stack.runtime import Stack
from tests.fixtures.pipeline import (
    Coordinate,
    LoaderProcess,
    WorkloadThread,
    WriterProcess,
    audit_stored,
    bronze_coordinates,
    dlq_coordinate,
    dlq_messages,
    partition_ends,
    read_partitions,
    wait_for_log_event,
    wait_until,
    wait_until_committed,
)
from tests.fixtures.source import IsolatedSource
from tests.fixtures.transform import describe

SEED = 20_261_123
TABLES = {"customers": "customer_id", "facilities": "facility_id", "transactions": "transaction_id"}
LENDING = [f"lending.{t}" for t in TABLES]
WORKLOAD_RATE = 25.0
POISON_PER_WAVE = 10
# A killed writer holds its partitions until its session expires: keep that short (the broker's minimum).
SESSION_TIMEOUT_MS = "6000"
STACK_TIMEOUT_S = 180.0

Poison = Callable[[bytes, str], bytes]


def _mutated(change: Callable[[dict[str, Any], str], object]) -> Poison:
    def build(real: bytes, key_column: str) -> bytes:
        document = json.loads(real)
        change(document, key_column)
        return json.dumps(document).encode()

    return build


POISONS: dict[str, Poison] = {
    "malformed_json": lambda real, key: b'{"before":null,"after":{oops},"op":"c"}',
    "truncated": lambda real, key: real[: len(real) // 2],
    "not_an_object": lambda real, key: b"[1,2,3]",
    "invalid_utf8": lambda real, key: real.replace(b'"op":', b'"\xff\xfe":', 1),
    "unknown_op": _mutated(lambda d, key: d.update(op="x")),
    "missing_source": _mutated(lambda d, key: d.pop("source")),
    "missing_image": _mutated(lambda d, key: d.update(op="c", after=None)),
    "wrong_type": _mutated(lambda d, key: (d.get("after") or d["before"]).update({key: "three"})),
}


def _real_values(settings: Settings, topics: list[str]) -> dict[str, bytes]:
    """One real Debezium change event per captured topic (the workload has written them by now)."""
    found: dict[str, bytes] = {}

    def every_topic() -> bool:
        existing = set(admin_client(settings.kafka).list_topics(timeout=10).topics)
        wanted = [t for t in topics if t in existing and t not in found]
        for message in read_partitions(settings, partition_ends(settings, wanted)) if wanted else []:
            value = message.value()
            if value is not None and str(message.topic()) not in found:
                found[str(message.topic())] = value
        return set(found) == set(topics)

    wait_until("a change event on every captured topic", every_topic, timeout_s=60, interval_s=1.0)
    return found


def _inject(settings: Settings, rng: random.Random, real: dict[str, bytes], count: int) -> list[Coordinate]:
    """Produce ``count`` poison records into random partitions of the captured topics; their coordinates."""
    client = producer(settings.kafka)
    delivered: list[Coordinate] = []
    errors: list[str] = []

    def report(error: Any, message: Any) -> None:
        if error is not None:
            errors.append(str(error))
        else:
            delivered.append((str(message.topic()), int(message.partition()), int(message.offset())))

    kinds = sorted(POISONS)
    for i in range(count):
        topic = rng.choice(sorted(real))
        key_column = TABLES[topic.rsplit(".", 1)[1]]
        kind = kinds[i % len(kinds)]
        client.produce(
            topic,
            key=f"poison-{kind}-{i}".encode(),
            value=POISONS[kind](real[topic], key_column),
            partition=rng.randrange(settings.kafka.topic_partitions),
            headers=[("chaos", kind.encode())],
            on_delivery=report,
        )
    assert client.flush(60) == 0, "poison records still undelivered after 60 s"
    assert errors == [], errors
    return delivered


class Chaos:
    """The faults, in order, with a log of what was done and when."""

    def __init__(self, stack: Stack, writer: WriterProcess, loader: LoaderProcess, rng: random.Random) -> None:
        self.stack, self.writer, self.loader, self.rng = stack, writer, loader, rng
        self.began = time.monotonic()
        self.done: list[str] = []
        self.writer_proc = writer.start()
        self.loader_proc = loader.start()
        wait_for_log_event(writer, self.writer_proc, "writer.assigned", timeout_s=90)

    def note(self, what: str) -> None:
        self.done.append(f"{time.monotonic() - self.began:.0f}s {what}")

    def pause(self, low: float = 0.5, high: float = 3.0) -> None:
        time.sleep(self.rng.uniform(low, high))  # the random moment of the next fault, not a synchronisation

    def kill_writer(self) -> None:
        self.pause()
        assert self.writer_proc.poll() is None, f"the writer died on its own:\n{self.writer.logs()[-3000:]}"
        self.writer.kill(self.writer_proc)
        assert self.writer_proc.returncode == -9
        self.note("kill -9 writer")
        self.writer_proc = self.writer.start()
        wait_for_log_event(self.writer, self.writer_proc, "writer.assigned", timeout_s=90)

    def kill_loader(self) -> None:
        self.pause()
        assert self.loader_proc.poll() is None, f"the loader died on its own:\n{self.loader.logs()[-3000:]}"
        self.loader.kill(self.loader_proc)
        assert self.loader_proc.returncode == -9
        self.note("kill -9 loader")
        self.loader_proc = self.loader.start()

    def zombie_writer(self, frozen_s: float) -> None:
        """A second writer takes some partitions, freezes past its session, wakes up, and is stopped."""
        self.pause()
        zombie = self.writer.start()
        wait_for_log_event(self.writer, zombie, "writer.assigned", timeout_s=90)
        self.pause(1.0, 3.0)  # it reads and buffers its partitions' records
        os.kill(zombie.pid, signal.SIGSTOP)
        self.note("second writer frozen (SIGSTOP)")
        time.sleep(frozen_s)  # the group evicts it; the first writer takes every partition back
        os.kill(zombie.pid, signal.SIGCONT)
        self.note("zombie writer thawed (SIGCONT)")
        self.pause(2.0, 4.0)  # it flushes what it held, its commits fail, it rejoins
        assert self.writer.terminate(zombie, timeout_s=60) == 0, self.writer.logs()[-3000:]
        self.note("zombie writer stopped")

    def restart_postgres(self, connectors: list[str]) -> None:
        self.pause()
        assert self.stack.postgres.stop(), "PostgreSQL was not running"
        self.note("PostgreSQL stopped")
        self.pause(2.0, 5.0)
        self.stack.postgres.start(STACK_TIMEOUT_S)
        for name in connectors:
            self.stack.connect.wait_running(name, STACK_TIMEOUT_S)
        self.note("PostgreSQL started, connectors running")

    def restart_broker(self) -> None:
        self.pause()
        assert self.stack.kafka.stop(), "the broker was not running"
        self.note("broker stopped")
        self.stack.kafka.start(STACK_TIMEOUT_S)
        self.note("broker started")

    def restart_connect(self, connectors: list[str]) -> None:
        self.pause()
        assert self.stack.connect.stop(), "Kafka Connect was not running"
        self.note("Connect stopped")
        self.stack.connect.start(STACK_TIMEOUT_S)
        for name in connectors:
            self.stack.connect.wait_running(name, STACK_TIMEOUT_S)
        self.note("Connect started, connectors running")


def _stop(workload: WorkloadThread) -> None:
    workload.stop.set()
    workload.join(timeout=60)
    assert not workload.is_alive(), "the workload did not stop"


def test_kill_9_restarts_and_poison_leave_zero_drift_and_every_offset_accounted_for(
    stack: Stack,
    isolated_source: IsolatedSource,
    writer: WriterProcess,
    loader: LoaderProcess,
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    source = isolated_source.settings
    prefix = source.kafka.topic_prefix
    topics = [f"{prefix}.{t}" for t in LENDING]
    pipeline = isolated_source.pipeline(
        writer,
        tmp_path,
        lambda c: c.qualified_name in LENDING,
        {
            "CDCFLOW_KAFKA__EXTRA__SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS,
            "CDCFLOW_WRITER__FLUSH_MAX_ROWS": "300",  # many small files: more moments to be killed mid-batch
        },
    )
    loader.env_overrides.update({**pipeline.env, "CDCFLOW_LOADER__INTERVAL_S": "1"})
    connectors = [stack.settings.connect.connector, source.connect.connector]
    workloads = [WorkloadThread(source, SEED, WORKLOAD_RATE, duration_s=600)]
    workloads[-1].start()
    poison: list[Coordinate] = []
    chaos = Chaos(stack, writer, loader, rng)
    try:
        time.sleep(3)  # some changes on every topic: the poison is built from real events
        real = _real_values(source, topics)
        chaos.kill_writer()
        poison += _inject(source, rng, real, POISON_PER_WAVE)
        chaos.note(f"{POISON_PER_WAVE} poison records")
        chaos.kill_loader()
        chaos.zombie_writer(frozen_s=2.5 * int(SESSION_TIMEOUT_MS) / 1000)
        chaos.restart_broker()
        chaos.kill_writer()
        chaos.kill_loader()
        chaos.restart_connect(connectors)
        poison += _inject(source, rng, real, POISON_PER_WAVE)
        chaos.note(f"{POISON_PER_WAVE} poison records")
        _stop(workloads[-1])  # the workload's connection would not survive the restart
        chaos.restart_postgres(connectors)
        workloads.append(WorkloadThread(source, SEED, WORKLOAD_RATE, duration_s=600))
        workloads[-1].start()
        chaos.kill_writer()
        chaos.kill_loader()
        chaos.pause(3.0, 5.0)  # the last writer and loader work under load for a moment
    finally:
        for workload in workloads:
            _stop(workload)
    operations = 0
    for workload in workloads:
        assert workload.error is None, f"the workload failed: {workload.error!r}"
        assert workload.result is not None
        operations += workload.result.total
    assert all(w.result is not None and w.result.total > 0 for w in workloads)

    ends = partition_ends(source, topics)
    wait_until_committed(source, writer.group, ends, timeout_s=180)
    assert writer.terminate(chaos.writer_proc, timeout_s=source.writer.grace_s) == 0, writer.logs()[-3000:]
    assert loader.terminate(chaos.loader_proc) == 0, loader.logs()[-3000:]

    report, _ = pipeline.settle(LENDING)
    bronze = bronze_coordinates(pipeline.settings.duckdb_path(), prefix)
    audit = audit_stored(source, writer.group, bronze, ends, store="bronze")
    dead_lettered = Counter(dlq_coordinate(m) for m in dlq_messages(source, writer.group))
    print(
        f"\n[chaos] {'; '.join(chaos.done)}\n[chaos] workload_ops={operations} poison={len(poison)} "
        f"{audit.summary()} verify: {describe(report)} runtime_s={time.monotonic() - began:.1f}"
    )

    assert not report.drift, describe(report)
    assert all(t.source_rows == t.silver_rows > 0 for t in report.tables), describe(report)
    assert sorted(t.table for t in report.tables) == LENDING
    assert audit.duplicates == 0, f"{audit.duplicates} Kafka coordinates are in bronze more than once"
    assert max(bronze.values()) == 1
    assert audit.missing == [], f"{len(audit.missing)} offsets neither in bronze, the DLQ nor tombstones: " + str(
        audit.missing[:20]
    )
    assert len(poison) == 2 * POISON_PER_WAVE
    assert set(dead_lettered) == set(poison), f"DLQ {sorted(dead_lettered)} != poison {sorted(poison)}"
    twice = {c: n for c, n in dead_lettered.items() if n > 1}
    assert twice == {}, f"{len(twice)} poison records are in the DLQ more than once: {sorted(twice.items())}"
    assert audit.in_lake > 0
    assert audit.tombstones > 0
    assert sum(1 for d in chaos.done if d.endswith("kill -9 writer")) == 3
    assert sum(1 for d in chaos.done if d.endswith("kill -9 loader")) == 3
    assert any(d.endswith("zombie writer thawed (SIGCONT)") for d in chaos.done)
    assert any(d.endswith("PostgreSQL started, connectors running") for d in chaos.done)
