"""The lake writer beside a peer, Apache Iceberg's Kafka Connect sink, in events per CPU-second of each.

Both read the same topic of real Debezium JSON change events of ``lending.transactions`` (bench/events.py)
on the real local broker and write Parquet:

- ``peer``: ``org.apache.iceberg.connect.IcebergSinkConnector`` (bench/peer/pom.xml) in a Connect worker JVM
  of its own (``ConnectStandalone``, loopback, a free port, offsets in a temporary file), one task, its
  ``DebeziumTransform``, a table auto-created in a Hadoop catalog whose warehouse is a temporary directory,
  Parquet data files (zstd). The worker starts on the empty topic; once its task is RUNNING and owns every
  partition, the JVM's idle CPU rate is read over a few seconds, then the events are produced. Counted: user
  + system CPU of the whole JVM from just before the first event is produced until the table's current
  snapshot holds a row for every event the transform keeps and the group ``connect-<name>`` has committed
  the end of every partition, less the idle rate times that wall time (commits wait for their interval).
  (Not paused while producing: a resumed Iceberg sink gets new task configs, so Connect restarts its task.)
- ``writer``, ``writer_confluent`` and ``writer_confluent_native``: the lake writer on its native path, on its
  confluent path (an install without cargo) and with confluent_kafka's consumer and the native JSON reader,
  measured as in bench/writer_bench.py, over the same topic afterwards.

The worker is stopped by its PID at the end, and the topics are deleted. Prints one JSON line.

    .venv/bin/python -m bench.peer_bench [--events 1000000] [--commit-interval-ms 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.events import (
    SOURCE_TOPIC,
    committed_all,
    cpu_seconds,
    delete_topics,
    end_offsets,
    produce_events,
    sample_events,
)
from bench.writer_bench import run_writer
from services.common.kafka import admin_client, ensure_topics, topic_watermarks
from services.common.settings import KafkaSettings, Settings, load_settings
from services.stack.jvm import java_argv
from services.stack.processes import die_with_parent
from tests.fixtures.net import free_port

__all__ = [
    "PeerRun",
    "connector_config",
    "kept_events",
    "table_columns",
    "table_snapshot",
    "worker_properties",
]

PLUGIN_ROOT = Path(__file__).resolve().parent / "peer" / "plugins"
PLUGIN_DIR = PLUGIN_ROOT / "iceberg-kafka-connect"
NAMESPACE, TABLE = "bench", "transactions"
_SINK_CLASS = "org.apache.iceberg.connect.IcebergSinkConnector"
_IDLE_S = 5.0
_SETTLE_S = 3.0
_TIMEOUT_S = 900.0
_GROUP_GRACE_S = 60.0


@dataclass(frozen=True, slots=True)
class PeerRun:
    """One measured run of the peer: CPU seconds (net: raw less idle rate times wall time) and what it wrote."""

    raw_cpu_s: float
    idle_cpu_per_s: float
    wall_s: float
    rows: int
    data_files: int
    group_committed: bool = True
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return self.raw_cpu_s - self.idle_cpu_per_s * self.wall_s


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The Iceberg table's current snapshot, from its summary."""

    records: int
    data_files: int


def worker_properties(*, bootstrap: str, port: int, offsets_file: Path, plugin_root: Path, max_poll: int) -> str:
    """The standalone worker's configuration: loopback only, the peer's plugin folder alone on its path."""
    return "\n".join(
        [
            f"bootstrap.servers={bootstrap}",
            f"listeners=http://127.0.0.1:{port}",
            "rest.advertised.host.name=127.0.0.1",
            f"offset.storage.file.filename={offsets_file}",
            f"plugin.path={plugin_root}",
            # The events are Debezium JSON without an embedded schema (connect/connectors/lending.json); the
            # keys are not read by the sink, so they are passed through as bytes.
            "key.converter=org.apache.kafka.connect.converters.ByteArrayConverter",
            "value.converter=org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable=false",
            # The writer polls batches of 20,000 (bench/writer_bench.py): the sink's consumer may too.
            f"consumer.max.poll.records={max_poll}",
            # As the stack's worker (connect-distributed.properties). It matters here: a sink task that gets
            # no more records answers the coordinator's commit request only from preCommit, so with the
            # default 60 s the last events wait up to two minutes for their snapshot (Iceberg issue 17811).
            "offset.flush.interval.ms=1000",
            "",
        ]
    )


def connector_config(
    *, topic: str, control_topic: str, warehouse: Path, bootstrap: str, commit_interval_ms: int
) -> dict[str, str]:
    """The Iceberg sink over ``topic``: row images plus a ``_cdc`` struct, appended to an auto-created table."""
    return {
        "connector.class": _SINK_CLASS,
        "tasks.max": "1",
        "topics": topic,
        "transforms": "debezium",
        "transforms.debezium.type": "org.apache.iceberg.connect.transforms.DebeziumTransform",
        "iceberg.tables": f"{NAMESPACE}.{TABLE}",
        "iceberg.tables.auto-create-enabled": "true",
        # Schemaless values: a column first seen null is added when a value shows up.
        "iceberg.tables.evolve-schema-enabled": "true",
        "iceberg.tables.auto-create-props.write.format.default": "parquet",
        "iceberg.tables.auto-create-props.write.parquet.compression-codec": "zstd",
        "iceberg.catalog.type": "hadoop",
        "iceberg.catalog.warehouse": warehouse.resolve().as_uri(),
        "iceberg.control.topic": control_topic,
        "iceberg.control.commit.interval-ms": str(commit_interval_ms),
        "iceberg.kafka.bootstrap.servers": bootstrap,
    }


def kept_events(samples: list[bytes], count: int) -> int:
    """How many of ``count`` events (the samples over and over) the DebeziumTransform turns into rows.

    It keeps an event whose row image (``before`` for a delete, else ``after``) is an object; it drops the
    rest (and Connect drops tombstones before it).
    """
    kept = []
    for value in samples:
        event = json.loads(value)
        image = event.get("before") if event.get("op") == "d" else event.get("after")
        kept.append(isinstance(image, dict))
    full, rest = divmod(count, len(samples))
    return full * sum(kept) + sum(kept[:rest])


def table_snapshot(table_dir: Path) -> Snapshot | None:
    """The current snapshot of a Hadoop-catalog table; None before its first commit (or mid-write)."""
    metadata = table_dir / "metadata"
    try:
        version = int((metadata / "version-hint.text").read_text().strip())
        table = json.loads((metadata / f"v{version}.metadata.json").read_text())
    except (OSError, ValueError):
        return None
    current = table.get("current-snapshot-id")
    for snapshot in table.get("snapshots", []):
        if snapshot.get("snapshot-id") == current and current is not None:
            summary = snapshot.get("summary", {})
            return Snapshot(int(summary.get("total-records", 0)), int(summary.get("total-data-files", 0)))
    return None


class Worker:
    """A standalone Connect worker JVM of this benchmark's own, and its REST API."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def _alive(self) -> None:
        if self.process.poll() is not None:
            raise SystemExit(f"the Connect worker exited: {self.log.read_text()[-3000:]}")

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._alive()
            try:
                plugins = httpx.get(f"{self.url}/connector-plugins", timeout=3).json()
                if any(p.get("class") == _SINK_CLASS for p in plugins):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise SystemExit(f"the Connect worker did not offer {_SINK_CLASS}: {self.log.read_text()[-3000:]}")

    def create(self, name: str, config: dict[str, str]) -> None:
        response = httpx.post(f"{self.url}/connectors", json={"name": name, "config": config}, timeout=60)
        if response.status_code >= 400:
            raise SystemExit(f"creating the connector failed: {response.text}")

    def status(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/connectors/{name}/status", timeout=10).json()
        return body

    def wait_state(self, name: str, state: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._alive()
            status = self.status(name)
            tasks = status.get("tasks", [])
            if any(t.get("state") == "FAILED" for t in tasks):
                raise SystemExit(f"the sink's task failed: {tasks[0].get('trace', '')[:3000]}")
            if status.get("connector", {}).get("state") == state and tasks and all(t["state"] == state for t in tasks):
                return
            time.sleep(0.2)
        raise SystemExit(f"the connector did not reach {state}: {self.status(name)}")


@contextmanager
def _worker(settings: Settings, folder: Path, max_poll: int) -> Iterator[Worker]:
    """Starts the worker JVM and stops it by its PID on the way out (SIGTERM, then SIGKILL after 60 s)."""
    port = free_port()
    properties = folder / "worker.properties"
    properties.write_text(
        worker_properties(
            bootstrap=settings.kafka.bootstrap_servers,
            port=port,
            offsets_file=folder / "connect.offsets",
            plugin_root=PLUGIN_ROOT,
            max_poll=max_poll,
        )
    )
    argv = java_argv(
        settings.stack.connect_dir, "1g", "org.apache.kafka.connect.cli.ConnectStandalone", str(properties)
    )
    log = folder / "connect.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 — an interrupted benchmark leaves no JVM
        )
    try:
        yield Worker(process, port, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _owns_every_partition(kafka: KafkaSettings, group: str, ends: dict[tuple[str, int], int]) -> bool:
    """Whether the group is stable with every partition of the topic assigned to a member."""
    admin = admin_client(kafka)  # held until the answer: a collected client never resolves its futures
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    assigned = {(tp.topic, tp.partition) for member in described.members for tp in member.assignment.topic_partitions}
    return str(described.state).endswith("STABLE") and set(ends) <= assigned


def _wait_until_written(
    kafka: KafkaSettings, worker: Worker, name: str, table_dir: Path, *, ends: dict[tuple[str, int], int], rows: int
) -> tuple[Snapshot, bool]:
    """Waits until the table's current snapshot holds ``rows`` rows and the group ``connect-<name>`` has
    committed ``ends``; returns the snapshot and whether the group did.

    The sink commits the group's offsets in the same Kafka transaction as the files it hands the coordinator,
    so they come before the snapshot; should they not, the wait for them ends after ``_GROUP_GRACE_S``.
    """
    deadline = time.monotonic() + _TIMEOUT_S
    complete_at: float | None = None
    while time.monotonic() < deadline:
        snapshot = table_snapshot(table_dir)
        if snapshot is not None and snapshot.records >= rows:
            complete_at = complete_at or time.monotonic()
            if committed_all(kafka, f"connect-{name}", ends):
                return snapshot, True
            if time.monotonic() - complete_at > _GROUP_GRACE_S:
                return snapshot, False
        worker.wait_state(name, "RUNNING", timeout_s=30)
        time.sleep(0.2)
    raise SystemExit(f"the sink did not write every event in {_TIMEOUT_S:.0f} s: {table_snapshot(table_dir)}")


def table_columns(table_dir: Path) -> dict[str, str]:
    """The current schema's top-level columns of a Hadoop-catalog table and their Iceberg types."""
    metadata = table_dir / "metadata"
    version = int((metadata / "version-hint.text").read_text().strip())
    table = json.loads((metadata / f"v{version}.metadata.json").read_text())
    schema = next(s for s in table["schemas"] if s["schema-id"] == table["current-schema-id"])
    return {f["name"]: f["type"] if isinstance(f["type"], str) else f["type"]["type"] for f in schema["fields"]}


def _run_peer(
    settings: Settings, topic: str, samples: list[bytes], *, events: int, folder: Path, args: argparse.Namespace
) -> tuple[PeerRun, dict[tuple[str, int], int]]:
    name = f"bench-peer-{uuid.uuid4().hex[:6]}"
    control = f"{topic}.iceberg-control"
    ensure_topics(settings.kafka, [topic, control])
    partitions = {(topic, p): 0 for p in topic_watermarks(settings.kafka, topic)}
    warehouse = folder / "warehouse"
    config = connector_config(
        topic=topic,
        control_topic=control,
        warehouse=warehouse,
        bootstrap=settings.kafka.bootstrap_servers,
        commit_interval_ms=args.commit_interval_ms,
    )
    expected = kept_events(samples, events)
    with _worker(settings, folder, args.max_poll) as worker:
        worker.wait_ready()
        worker.create(name, config)
        worker.wait_state(name, "RUNNING")
        deadline = time.monotonic() + 120
        while not _owns_every_partition(settings.kafka, f"connect-{name}", partitions):
            if time.monotonic() > deadline:
                raise SystemExit("the sink's consumer was not assigned every partition")
            time.sleep(0.5)
        time.sleep(_SETTLE_S)  # the coordinator's own consumer joins the control topic
        idle_from = cpu_seconds(worker.process.pid)
        time.sleep(_IDLE_S)
        idle_rate = (cpu_seconds(worker.process.pid) - idle_from) / _IDLE_S
        began_cpu, began = cpu_seconds(worker.process.pid), time.monotonic()
        produce_events(settings.kafka, topic, samples, events)
        ends = end_offsets(settings.kafka, topic)
        table_dir = warehouse / NAMESPACE / TABLE
        snapshot, group_committed = _wait_until_written(
            settings.kafka, worker, name, table_dir, ends=ends, rows=expected
        )
        cpu, wall = cpu_seconds(worker.process.pid) - began_cpu, time.monotonic() - began
        if args.worker_log is not None:
            shutil.copyfile(worker.log, args.worker_log)
        run = PeerRun(
            raw_cpu_s=cpu,
            idle_cpu_per_s=idle_rate,
            wall_s=wall,
            rows=snapshot.records,
            data_files=snapshot.data_files,
            group_committed=group_committed,
            columns=table_columns(table_dir),
        )
    if run.rows != expected:
        raise SystemExit(f"the peer's table holds {run.rows} rows, {expected} expected")
    return run, ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # A million: at 200,000 the JVM's JIT warm-up is about half of the peer's CPU (BENCHMARKS.md).
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--commit-interval-ms", type=int, default=10_000)
    parser.add_argument("--max-poll", type=int, default=20_000)
    parser.add_argument("--no-confluent", action="store_true", help="skip the writer's confluent consumer")
    parser.add_argument("--worker-log", type=Path, help="keep a copy of the Connect worker's log here")
    args = parser.parse_args()
    if not any(PLUGIN_DIR.glob("iceberg-kafka-connect-*.jar")):
        raise SystemExit(f"{PLUGIN_DIR} is empty: run `mvn -q -f bench/peer/pom.xml package` (make bench-peer)")
    settings = load_settings()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.{SOURCE_TOPIC}"
    samples = sample_events(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="cdcflow-peer-bench-") as folder:
            base = Path(folder)
            peer, ends = _run_peer(settings, topic, samples, events=args.events, folder=base, args=args)
            writer_cpu = run_writer(settings, prefix, ends, base)
            paths = () if args.no_confluent else tuple(_CONFLUENT)
            confluent = {path: run_writer(settings, prefix, ends, base, path=path) for path in paths}
    finally:
        delete_topics(settings.kafka, [topic, f"{topic}.iceberg-control"])
    print(json.dumps(_figures(args.events, samples, peer, writer_cpu, confluent)))


# The writer's paths with confluent_kafka's consumer (bench/writer_bench.py's PATHS), by the name their figures
# carry: with Arrow's JSON reader (an install without cargo) and with the native one.
_CONFLUENT = {"confluent": "confluent", "confluent-native": "confluent_native"}


def _figures(
    events: int, samples: list[bytes], peer: PeerRun, writer_cpu: float, confluent: dict[str, float]
) -> dict[str, object]:
    """The JSON figures; ``confluent``: CPU seconds of each confluent-consumer path run (none when skipped)."""
    peer_rate = events / peer.cpu_s
    figures: dict[str, object] = {
        "events": events,
        "avg_event_bytes": round(sum(map(len, samples)) / len(samples)),
        "peer": "iceberg-kafka-connect",
        "peer_rows": peer.rows,
        "peer_data_files": peer.data_files,
        "peer_group_committed": peer.group_committed,
        "peer_columns": peer.columns,
        "peer_cpu_s": round(peer.cpu_s, 2),
        "peer_raw_cpu_s": round(peer.raw_cpu_s, 2),
        "peer_idle_cpu_per_s": round(peer.idle_cpu_per_s, 3),
        "peer_wall_s": round(peer.wall_s, 1),
        "peer_events_per_cpu_s": round(peer_rate),
        "writer_events_per_cpu_s": round(events / writer_cpu),
        "writer_over_peer": round(events / writer_cpu / peer_rate, 2),
    }
    # The goal: the writer at 3x the peer or more, per CPU-second.
    figures["native_goal_met"] = events / writer_cpu >= 3 * peer_rate
    for path, cpu_s in confluent.items():
        name = _CONFLUENT[path]
        figures[f"writer_{name}_events_per_cpu_s"] = round(events / cpu_s)
        figures[f"writer_{name}_over_peer"] = round(events / cpu_s / peer_rate, 2)
        figures[f"{name}_goal_met"] = events / cpu_s >= 3 * peer_rate
    return figures


if __name__ == "__main__":
    main()
