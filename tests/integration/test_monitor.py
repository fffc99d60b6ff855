"""Against the real stack: ``cdcflow monitor`` as users run it, scraped over HTTP.

- A scratch group that committed part of its topic: lag in records and seconds per partition, committed and
  end offsets, and a partition it never committed on.
- Its DLQ topic: records counted by reason, a duplicate of one original record counted once, the depth.
- A real lake writer that has read records but holds them uncommitted in its buffer for 20 s (its own consume
  lag is 0): the group's lag is > 0 in records and seconds; then the writer is killed and its lag series stay
  and keep growing.
- The lending connector's slot and connector/task state.
- A table created in a captured schema after the connector started (so not in its publication): counted for
  the connector, and no longer once it is gone; a table in a schema the connector does not take is not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.kafka import Message, TopicPartition, consumer, ensure_topics, producer
from services.common.settings import Settings
from services.stack.runtime import Stack
from tests.fixtures.net import free_port
from tests.fixtures.pipeline import (
    WriterProcess,
    real_events,
    wait_for_log_event,
    wait_until,
    wait_until_committed,
)

Labels = frozenset[tuple[str, str]]
Scrape = dict[tuple[str, Labels], float]


@dataclass
class MonitorProcess:
    proc: subprocess.Popen[bytes]
    url: str
    group_prefix: str
    log: Path

    def scrape(self) -> Scrape:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, frozenset(labels.items())))

    def wait_for(self, name: str, expected: float, timeout_s: float = 60.0, **labels: str) -> None:
        wait_until(f"{name}{labels} == {expected}", lambda: self.value(name, **labels) == expected, timeout_s)


@pytest.fixture(scope="module")
def monitor(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorProcess]:
    """``cdcflow monitor`` polling every second, watching only this module's groups."""
    port, prefix = free_port(), f"cdcflow-mon{uuid.uuid4().hex[:8]}"
    log = tmp_path_factory.mktemp("monitor") / "monitor.log"
    env = {
        **os.environ,
        "CDCFLOW_MONITOR__HEALTH_PORT": str(port),
        "CDCFLOW_MONITOR__INTERVAL_S": "1",
        "CDCFLOW_MONITOR__GROUP_PREFIX": prefix,
        "CDCFLOW_LOG__FORMAT": "json",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "monitor"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    running = MonitorProcess(proc, url, prefix, log)

    def ready() -> bool:
        assert proc.poll() is None, f"the monitor exited with {proc.returncode}:\n{log.read_text()}"
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until("the monitor to be ready", ready, timeout_s=60)
        yield running
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]


Headers = list[tuple[str, str | bytes | None]]


def _produce(settings: Settings, topic: str, counts: dict[int, int], headers: Headers | None = None) -> None:
    client = producer(settings.kafka, **{"linger.ms": 5})
    for partition, count in counts.items():
        for i in range(count):
            client.produce(topic, key=f"k{i}".encode(), value=b"{}", partition=partition, headers=headers)
    assert client.flush(30) == 0


def _commit(settings: Settings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    client = consumer(settings.kafka, group)  # never subscribes: a commit from outside any generation
    try:
        client.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    finally:
        client.close()


def test_lag_of_a_group_that_committed_part_of_its_topic(settings: Settings, monitor: MonitorProcess) -> None:
    topic, group = f"montest{uuid.uuid4().hex[:8]}.scratch", f"{monitor.group_prefix}-scratch"
    ensure_topics(settings.kafka, [topic])
    produced_from = time.time()
    _produce(settings, topic, {0: 30, 1: 5, 2: 4})
    produced_to = time.time()
    _commit(settings, group, {(topic, 0): 10, (topic, 1): 5})  # partition 2: nothing committed

    def at(seen: Scrape, name: str, partition: int, **extra: str) -> float | None:
        return seen.get((name, frozenset({"topic": topic, "partition": str(partition), **extra}.items())))

    # 1: committed == end; 2: nothing committed, so end minus log start
    expected = {0: 20, 1: 0, 2: 4}

    def all_reported() -> bool:
        seen = monitor.scrape()
        lags = {p: at(seen, "cdcflow_consumer_lag_records", p, group=group) for p in expected}
        return lags == expected and all(
            at(seen, "cdcflow_consumer_lag_seconds", p, group=group) is not None for p in expected
        )

    wait_until("the lag of every partition", all_reported, timeout_s=60)
    seen = monitor.scrape()
    scraped_at = time.time()
    assert at(seen, "cdcflow_consumer_committed_offset", 0, group=group) == 10
    assert at(seen, "cdcflow_consumer_committed_offset", 2, group=group) is None
    assert at(seen, "cdcflow_topic_end_offset", 0) == 30
    assert at(seen, "cdcflow_consumer_lag_seconds", 1, group=group) == 0
    first = at(seen, "cdcflow_consumer_lag_seconds", 0, group=group)
    assert first is not None
    # the age of record 10 itself (its timestamp: the monitor first saw the partition after it was written)
    assert scraped_at - produced_to - 2 <= first <= scraped_at - produced_from + 2
    assert (at(seen, "cdcflow_consumer_lag_seconds", 2, group=group) or 0) > 0

    time.sleep(2.5)
    later = monitor.value("cdcflow_consumer_lag_seconds", group=group, topic=topic, partition="0")
    assert later is not None
    assert later > first + 1  # nothing was committed since: the oldest uncommitted record only got older


def test_transaction_markers_and_aborted_records_are_not_lag_in_seconds(
    settings: Settings, monitor: MonitorProcess
) -> None:
    """A group that committed every record of a transactional producer still sits before the commit marker,
    which no consumer reads or commits past; aborted records are never read either. Neither is a record
    waiting: 0 s, whatever the offsets say."""
    topic, group = f"montest{uuid.uuid4().hex[:8]}.txn", f"{monitor.group_prefix}-txn"
    ensure_topics(settings.kafka, [topic])
    client = producer(settings.kafka, **{"transactional.id": f"{group}-producer"})
    client.init_transactions(30)
    client.begin_transaction()
    for i in range(5):
        client.produce(topic, key=f"k{i}".encode(), value=b"{}", partition=0)
    client.commit_transaction(30)  # offsets 0..4, the commit marker at 5
    client.begin_transaction()
    for i in range(3):
        client.produce(topic, key=f"k{i}".encode(), value=b"{}", partition=1)
    assert client.flush(30) == 0  # written, then aborted: offsets 0..2 aborted, the abort marker at 3
    client.abort_transaction(30)
    _commit(settings, group, {(topic, 0): 5})  # every record of partition 0; nothing on partition 1

    def lag(partition: int) -> tuple[float | None, float | None]:
        labels = {"group": group, "topic": topic, "partition": str(partition)}
        return monitor.value("cdcflow_consumer_lag_records", **labels), monitor.value(
            "cdcflow_consumer_lag_seconds", **labels
        )

    wait_until("the transactional partitions' lag", lambda: lag(0) == (1, 0) and lag(1) == (4, 0), timeout_s=60)
    time.sleep(4)  # a few polls later (the committed offset has stayed put): still nothing waiting
    assert lag(0) == (1, 0)
    assert lag(1) == (4, 0)


def test_dlq_records_are_counted_by_reason_once_per_original_record(
    settings: Settings, monitor: MonitorProcess
) -> None:
    group = f"{monitor.group_prefix}-dlq"
    dlq = f"_cdcflow.dlq.{group}"
    ensure_topics(settings.kafka, [dlq])

    def error(reason: str, offset: int) -> Headers:
        return [
            ("cdcflow.error.reason", reason.encode()),
            ("cdcflow.source.topic", b"cdcflow.lending.transactions"),
            ("cdcflow.source.partition", b"3"),
            ("cdcflow.source.offset", str(offset).encode()),
        ]

    _produce(settings, dlq, {0: 1}, error("malformed_json", 7))
    _produce(settings, dlq, {0: 1}, error("malformed_json", 7))  # a killed writer's second copy
    _produce(settings, dlq, {1: 1}, error("wrong_type", 8))
    monitor.wait_for("cdcflow_dlq_depth_records", 3, group=group)
    monitor.wait_for("cdcflow_dlq_records_total", 1, group=group, reason="malformed_json")
    monitor.wait_for("cdcflow_dlq_records_total", 1, group=group, reason="wrong_type")


def _transactions(settings: Settings, count: int) -> list[Message]:
    return real_events(settings, "transactions", count)[:count]


def _writer_read_all(url: str, labels: dict[str, str]) -> bool:
    """The writer's own gauges: nothing left to read on the partition, and records in its buffer."""
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return False
    seen = {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    consume_lag = seen.get(("cdcflow_writer_consume_lag_records", frozenset(labels.items())))
    return consume_lag == 0 and seen.get(("cdcflow_buffered_bytes", frozenset())) not in (None, 0)


def test_records_a_writer_holds_uncommitted_are_lag_and_it_outlives_the_writer(
    settings: Settings, monitor: MonitorProcess, tmp_path: Path
) -> None:
    prefix = f"monw{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.lending.transactions"
    events = [m.value() for m in _transactions(settings, 30)]
    ensure_topics(settings.kafka, [topic])
    group = f"{monitor.group_prefix}-writer"
    writer = WriterProcess(group=group, lake_root=tmp_path / "lake", log_dir=tmp_path)
    writer_port = free_port()
    writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
            "CDCFLOW_WRITER__HEALTH_PORT": str(writer_port),
            "CDCFLOW_WRITER__FLUSH_MAX_ROWS": "20",  # the first 20 are written and committed at once
            "CDCFLOW_WRITER__FLUSH_MAX_AGE_S": "600",  # the 10 produced later stay in the buffer, uncommitted
        }
    )

    def produce(values: list[bytes | None]) -> None:
        client = producer(settings.kafka, **{"linger.ms": 5})
        for value in values:
            client.produce(topic, key=b"k", value=value, partition=0)
        assert client.flush(30) == 0

    produce(events[:20])
    try:
        proc = writer.start()
        wait_for_log_event(writer, proc, "writer.assigned")
        wait_until_committed(settings, group, {(topic, 0): 20})
        produce(events[20:])  # read at once, then held: fewer than FLUSH_MAX_ROWS, younger than the max age
        monitor.wait_for("cdcflow_consumer_lag_records", 10, group=group, topic=topic, partition="0")
        labels = {"group": group, "topic": topic, "partition": "0"}
        assert monitor.value("cdcflow_consumer_committed_offset", **labels) == 20
        # the writer is alive and has read the 10 records (its own consume lag is 0, its buffer holds them) but
        # not committed them: 20 s on, the group's lag is still 10 records and 20 s
        writer_metrics = f"http://127.0.0.1:{writer_port}/metrics"
        wait_until("the writer to have read everything", lambda: _writer_read_all(writer_metrics, labels), 60)
        wait_until(
            "the held records to age 20 s",
            lambda: (monitor.value("cdcflow_consumer_lag_seconds", **labels) or 0) >= 20,
            timeout_s=60,
        )
        assert monitor.value("cdcflow_consumer_lag_records", **labels) == 10
        assert monitor.value("cdcflow_consumer_committed_offset", **labels) == 20
        assert _writer_read_all(writer_metrics, labels)
        assert proc.poll() is None, "the writer died on its own"

        writer.kill(proc)
        first = monitor.value("cdcflow_consumer_lag_seconds", **labels)
        time.sleep(2.5)
        second = monitor.value("cdcflow_consumer_lag_seconds", **labels)
        assert first is not None
        assert second is not None
        assert second > first + 1  # the dead writer's lag is still reported, and ageing
        assert monitor.value("cdcflow_consumer_lag_records", **labels) == 10
    finally:
        writer.stop_all()


def test_the_lending_slot_and_connector_are_reported(settings: Settings, monitor: MonitorProcess) -> None:
    seen = monitor.scrape()
    slot = {"slot": "cdcflow_lending"}
    assert seen[("cdcflow_replication_slot_active", frozenset(slot.items()))] == 1
    assert seen[("cdcflow_replication_slot_retained_bytes", frozenset(slot.items()))] >= 0
    assert ("cdcflow_replication_slot_confirmed_flush_lag_bytes", frozenset(slot.items())) in seen
    statuses = [
        value
        for (name, labels), value in seen.items()
        if name == "cdcflow_replication_slot_wal_status" and ("slot", "cdcflow_lending") in labels
    ]
    assert sorted(statuses) == [0, 0, 0, 1]  # exactly one current status
    assert seen[("cdcflow_connector_up", frozenset({("connector", "lending")}))] == 1
    assert seen[("cdcflow_connector_task_running", frozenset({("connector", "lending"), ("task", "0")}))] == 1
    for probe in ("kafka", "postgres", "publications", "connect", "dlq", "transform"):
        assert seen[("cdcflow_monitor_probe_up", frozenset({("probe", probe)}))] == 1, probe
    assert any(name == "cdcflow_build_info" and value == 1 for (name, _), value in seen.items())
    assert any(name == "process_resident_memory_bytes" for name, _ in seen)  # the default process metrics


def test_a_table_missing_from_the_publication_is_counted_for_its_connector(
    settings: Settings, monitor: MonitorProcess
) -> None:
    metric = "cdcflow_source_unpublished_tables"
    assert monitor.value(metric, connector="lending") == 0
    name = f"mon_unpublished_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as pg:
        pg.execute(f"create table lending.{name} (id int primary key); create table public.{name} (id int)".encode())
        try:
            monitor.wait_for(metric, 1, connector="lending")  # lending.<name> alone
            assert f'"tables": ["lending.{name}"]' in monitor.log.read_text()
        finally:
            pg.execute(f"drop table lending.{name}, public.{name}".encode())
    monitor.wait_for(metric, 0, connector="lending")


def test_captured_tables_that_cannot_be_published_are_counted_by_reason(
    settings: Settings, monitor: MonitorProcess
) -> None:
    metric = "cdcflow_source_unpublishable_tables"

    def counted(reason: str) -> float | None:
        return monitor.value(metric, connector="lending", reason=reason)

    assert (counted("no_replica_identity"), counted("unlogged")) == (0, 0)
    name = f"mon_unpublishable_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as pg:
        # in lending alone: public is not in the connector's lists, and the keyed one has an identity
        pg.execute(
            f"create table lending.{name} (id int, note text); create table public.{name} (id int);"
            f"create unlogged table lending.{name}_stage (id int primary key);"
            f"create table lending.{name}_keyed (id int not null unique, note text);"
            f"alter table lending.{name}_keyed replica identity full".encode()
        )
        try:
            wait_until("both counted", lambda: (counted("no_replica_identity"), counted("unlogged")) == (1, 1))
            logged = f'"lending.{name}": "no_replica_identity", "lending.{name}_stage": "unlogged"'
            assert logged in monitor.log.read_text()
            # the runbook's remedies
            remedies = f"alter table lending.{name} replica identity full; alter table lending.{name}_stage set logged"
            pg.execute(remedies.encode())
            wait_until("both remedied", lambda: (counted("no_replica_identity"), counted("unlogged")) == (0, 0))
        finally:
            pg.execute(f"drop table lending.{name}, public.{name}, lending.{name}_stage, lending.{name}_keyed".encode())


def test_types_the_connector_would_fail_on_are_counted_for_its_connector(
    settings: Settings, monitor: MonitorProcess
) -> None:
    metric = "cdcflow_source_unloadable_types"
    assert monitor.value(metric, connector="lending") == 0
    name = f"mon_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as pg:
        # in a schema the connector does not capture, used by no table: Debezium loads every type at start
        pg.execute(f"create type public.{name} as enum ('a'); create domain public.{name}_d as public.{name}".encode())
        try:
            monitor.wait_for(metric, 1, connector="lending")
            assert f'"types": ["public.{name}_d"]' in monitor.log.read_text()
        finally:
            pg.execute(f"drop domain public.{name}_d; drop type public.{name}".encode())
    monitor.wait_for(metric, 0, connector="lending")
