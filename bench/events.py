"""What the throughput benchmarks share: real change events, a topic of them, and the CPU time of a process.

The events are real Debezium JSON change events of ``lending.transactions`` from the local stack's topic. A
fresh stack's topic may hold too few: then the seeded workload writes rows through PostgreSQL, and the
sample is read once the connector has brought them to Kafka.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common.kafka import (
    TopicPartition,
    admin_client,
    consumer,
    end_positions,
    ensure_topics,
    producer,
    topic_watermarks,
)
from services.common.settings import KafkaSettings, Settings
from services.stack.processes import die_with_parent
from services.stack.workload import Workload

__all__ = [
    "SOURCE_TOPIC",
    "committed_all",
    "cpu_seconds",
    "delete_topics",
    "end_offsets",
    "produce_events",
    "sample_events",
    "wait_until_settled",
]

SOURCE_TOPIC = "lending.transactions"
_TICKS = os.sysconf("SC_CLK_TCK")
# A workload round: about a third of its operations touch lending.transactions.
_WORKLOAD_RATE = 500.0
_WORKLOAD_SECONDS = 5.0
_WORKLOAD_ROUNDS = 6


WRITER_BENCH_SETTINGS = {
    "CDCFLOW_WRITER__FLUSH_MAX_ROWS": "100000",
    "CDCFLOW_WRITER__POLL_BATCH": "20000",
    "CDCFLOW_WRITER__FLUSH_MAX_AGE_S": "5",
    "CDCFLOW_WRITER__HEALTH_PORT": "0",
    "CDCFLOW_WRITER__SCHEMA_EVOLUTION": "dlq",
    "CDCFLOW_LOG__LEVEL": "INFO",
    "CDCFLOW_LOG__FORMAT": "json",
}
"""The lake writer as the benchmarks run it: flushes of 100,000 rows, polls of 20,000, no endpoint."""


@contextmanager
def started_writer(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m services.consumer`` with this environment, :data:`WRITER_BENCH_SETTINGS` and ``env``, its
    output in ``log``; yielded once it logged ``writer.started``, stopped with SIGTERM after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.consumer"],
            env={**os.environ, **WRITER_BENCH_SETTINGS, **env},
            stdout=out,
            stderr=out,
            preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 — an interrupted benchmark leaves no writer
        )
    try:
        while b'"writer.started"' not in log.read_bytes():
            if proc.poll() is not None:
                raise SystemExit(f"the writer exited: {log.read_text()[-2000:]}")
            time.sleep(0.01)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, every thread, from /proc (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def sample_events(settings: Settings, wanted: int = 2_000) -> list[bytes]:
    """Up to ``wanted`` change events of the stack's source topic, at least a quarter of that.

    While the topic holds fewer, a workload round writes rows through PostgreSQL and the topic is read again
    once the change events have reached Kafka (its end offsets grew, then held still).
    """
    topic = f"{settings.kafka.topic_prefix}.{SOURCE_TOPIC}"
    ensure_topics(settings.kafka, [topic])
    for round_ in range(_WORKLOAD_ROUNDS + 1):
        values = _read_values(settings.kafka, topic, wanted)
        if len(values) >= wanted // 4:
            return values
        if round_ == _WORKLOAD_ROUNDS:
            break
        before = _topic_size(settings.kafka, topic)
        Workload(settings.postgres, seed=99 + round_).run(rate=_WORKLOAD_RATE, duration_s=_WORKLOAD_SECONDS)
        wait_until_settled(lambda: _topic_size(settings.kafka, topic), above=before)
    raise SystemExit(
        f"only {len(values)} change events in {topic} after {_WORKLOAD_ROUNDS} workload rounds: "
        "is the stack up and its connector running (cdcflow stack status)?"
    )


def wait_until_settled(
    size: Callable[[], int],
    *,
    above: int,
    quiet_s: float = 3.0,
    timeout_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Waits until ``size()`` has grown past ``above`` and then held still for ``quiet_s``; returns it.

    Gives up after ``timeout_s`` and returns the last size: the caller judges whether it is enough.
    """
    deadline = clock() + timeout_s
    last, since = size(), clock()
    while clock() < deadline:
        if last > above and clock() - since >= quiet_s:
            return last
        sleep(0.5)
        now = size()
        if now != last:
            last, since = now, clock()
    return last


def _topic_size(kafka: KafkaSettings, topic: str) -> int:
    return sum(high for _, high in topic_watermarks(kafka, topic).values())


def _read_values(kafka: KafkaSettings, topic: str, wanted: int, timeout_s: float = 30.0) -> list[bytes]:
    """The first ``wanted`` non-empty values (tombstones left out) of the topic's partitions, in order."""
    reader = consumer(kafka, f"bench-sample-{uuid.uuid4().hex[:6]}")
    try:
        ends = {p.partition: p.offset for p in end_positions(reader, [topic]) if p.offset > 0}
        if not ends:
            return []
        reader.assign([TopicPartition(topic, p, 0) for p in ends])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(values) < wanted and time.monotonic() < deadline:
            for message in reader.consume(1_000, timeout=1.0):
                if message.error() is None and (value := message.value()):
                    values.append(value)
            positions = reader.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] for tp in positions):
                break
        return values[:wanted]
    finally:
        reader.close()


def produce_events(kafka: KafkaSettings, topic: str, samples: list[bytes], count: int) -> None:
    """``count`` events into ``topic`` (created if missing), the samples over and over, keyed by their number."""
    ensure_topics(kafka, [topic])
    out = producer(kafka, **{"compression.type": "lz4", "linger.ms": 50, "batch.size": 1 << 20})
    for i in range(count):
        value = samples[i % len(samples)]
        while True:
            try:
                out.produce(topic, value=value, key=str(i).encode())
                break
            except BufferError:
                out.poll(0.05)
        if i % 10_000 == 0:
            out.poll(0)
    if out.flush(60):
        raise SystemExit("the benchmark events were not all delivered")


def end_offsets(kafka: KafkaSettings, topic: str) -> dict[tuple[str, int], int]:
    """The end offset of each non-empty partition of ``topic``."""
    reader = consumer(kafka, f"bench-ends-{uuid.uuid4().hex[:6]}")
    try:
        return {(p.topic, p.partition): p.offset for p in end_positions(reader, [topic]) if p.offset > 0}
    finally:
        reader.close()


def committed_all(kafka: KafkaSettings, group: str, ends: dict[tuple[str, int], int]) -> bool:
    """Whether ``group`` has committed at least the end offset of every partition in ``ends``."""
    probe = consumer(kafka, group)
    try:
        done = probe.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
        return all(c.offset >= ends[(c.topic, c.partition)] for c in done)
    finally:
        probe.close()


def delete_topics(kafka: KafkaSettings, topics: list[str], timeout_s: float = 30.0) -> None:
    """Deletes ``topics`` and waits for the broker's answer: an admin client dropped before its futures
    resolve may never send the request, and the benchmark's topics (up to ~1 GB each) would stay behind."""
    admin = admin_client(kafka)
    for future in admin.delete_topics(topics, operation_timeout=timeout_s).values():
        future.result(timeout=timeout_s)
