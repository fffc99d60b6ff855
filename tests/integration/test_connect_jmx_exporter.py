"""Against the real stack: Debezium's metrics through the JMX exporter the stack loads into Connect.

The shared worker is not restarted: a throw-away Connect worker (standalone mode, launched with the same
``java_argv`` and ``-javaagent`` option as ``stack up`` gives the real one) runs a Debezium connector of its own
— its own slot, publication and topic prefix on the stack's PostgreSQL, no snapshot — and its exporter must
serve the streaming and snapshot metrics under the names and labels of ``connect/jmx-exporter.yml``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.kafka import admin_client
from services.common.settings import Settings
from services.stack.connect import ConnectWorker, load_connector, resolve_env
from services.stack.jvm import java_argv, plugin_root
from services.stack.runtime import Stack
from tests.fixtures.net import free_port
from tests.fixtures.pipeline import wait_until

# Connector settings of the throw-away source that differ from the lending connector's.
_KEPT_OUT = ("heartbeat.interval.ms", "heartbeat.action.query")


def _properties(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.fixture
def throwaway_worker(stack: Stack, settings: Settings, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A standalone Connect worker with the JMX exporter and one Debezium connector; yields (metrics URL,
    the connector's topic prefix)."""
    name, exporter_port = f"jmx{uuid.uuid4().hex[:8]}", free_port()
    worker_settings = settings.model_copy(
        update={"connect": settings.connect.model_copy(update={"jmx_exporter_port": exporter_port})}
    )
    env = settings.connector_env()
    connector = {
        k: resolve_env(v, env)
        for k, v in load_connector(settings.stack.connect_dir, settings.connect.connector).items()
        if k not in _KEPT_OUT
    }
    connector.update(
        {
            "name": name,
            "topic.prefix": name,
            "slot.name": name,
            "publication.name": name,
            "schema.include.list": "lending",
            "table.include.list": "lending.customers",
            "snapshot.mode": "no_data",
        }
    )
    worker = _properties(
        tmp_path / "worker.properties",
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "listeners": f"http://127.0.0.1:{free_port()}",
            "plugin.path": str(plugin_root(settings.stack.connect_dir).resolve()),
            "offset.storage.file.filename": str(tmp_path / "offsets"),
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        },
    )
    argv = java_argv(
        settings.stack.connect_dir,
        "512m",
        "org.apache.kafka.connect.cli.ConnectStandalone",
        str(worker),
        str(_properties(tmp_path / "connector.properties", connector)),
        jvm_options=ConnectWorker(worker_settings).jmx_exporter_options(),
    )
    with (tmp_path / "connect.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        yield f"http://127.0.0.1:{exporter_port}/metrics", name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        _drop_source(settings, name)


def _drop_source(settings: Settings, name: str) -> None:
    with psycopg.connect(settings.postgres.dsn(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s", (name,)
        )
        conn.execute(f'drop publication if exists "{name}"'.encode())
    admin = admin_client(settings.kafka)
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"{name}.")]
    for future in admin.delete_topics(topics, operation_timeout=30).values() if topics else []:
        future.result(timeout=30)


def _samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return {}
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_debeziums_streaming_and_snapshot_metrics_are_served(throwaway_worker: tuple[str, str]) -> None:
    url, prefix = throwaway_worker
    streaming = {"plugin": "postgres", "context": "streaming", "connector": prefix}

    def connected() -> bool:
        return (streaming, 1.0) in _samples(url).get("debezium_metrics_Connected", [])

    wait_until("the throw-away connector to stream", connected, timeout_s=150, interval_s=1.0)
    samples = _samples(url)
    for name in (
        "debezium_metrics_MilliSecondsBehindSource",
        "debezium_metrics_QueueRemainingCapacity",
        "debezium_metrics_MilliSecondsSinceLastEvent",
        "debezium_metrics_TotalNumberOfEventsSeen",
    ):
        assert any(labels == streaming for labels, _ in samples.get(name, [])), name
    capacity = next(v for labels, v in samples["debezium_metrics_QueueRemainingCapacity"] if labels == streaming)
    assert capacity > 0
    snapshot = {**streaming, "context": "snapshot"}
    assert any(labels == snapshot for labels, _ in samples.get("debezium_metrics_SnapshotCompleted", []))
    assert any(labels == snapshot for labels, _ in samples.get("debezium_metrics_TotalTableCount", []))
    assert "jvm_memory_used_bytes" in samples  # the agent's JVM metrics come along
