"""The Connect worker's launch line loads Prometheus's JMX exporter with the repository's rules, on 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from services.common.health import HealthServer
from services.common.metrics import new_registry
from services.common.settings import load_settings, repo_root
from services.stack.connect import ConnectWorker
from services.stack.errors import ComponentFailedError
from services.stack.jvm import agent_jar, java_argv


def _worker(connect_dir: Path, port: int) -> ConnectWorker:
    settings = load_settings({"CDCFLOW_CONNECT__JMX_EXPORTER_PORT": str(port)})
    stack = settings.stack.model_copy(update={"connect_dir": connect_dir})
    return ConnectWorker(settings.model_copy(update={"stack": stack}))


def _fake_agent(connect_dir: Path, version: str) -> Path:
    jar = connect_dir / "agents" / f"jmx_prometheus_javaagent-{version}.jar"
    jar.parent.mkdir(parents=True, exist_ok=True)
    jar.write_bytes(b"PK")
    return jar


def test_the_agent_serves_on_loopback_with_the_repository_rules(tmp_path: Path) -> None:
    _fake_agent(tmp_path, "1.9.0")
    newest = _fake_agent(tmp_path, "1.10.0")  # newer, though not in name order
    (option,) = _worker(tmp_path, 19404).jmx_exporter_options()
    assert option == f"-javaagent:{newest.resolve()}=127.0.0.1:19404:{(tmp_path / 'jmx-exporter.yml').resolve()}"
    assert agent_jar(tmp_path) == newest


def test_the_option_goes_before_the_classpath_and_main_class(tmp_path: Path) -> None:
    argv = java_argv(tmp_path, "1g", "org.example.Main", "worker.properties", jvm_options=["-javaagent:a.jar=1"])
    assert argv.index("-javaagent:a.jar=1") < argv.index("-cp") < argv.index("org.example.Main")
    assert argv[-1] == "worker.properties"


def test_port_0_launches_the_worker_without_the_exporter(tmp_path: Path) -> None:
    worker = _worker(tmp_path, 0)
    assert worker.jmx_exporter_options() == []
    assert worker.jmx_exporter_url is None


def test_a_missing_agent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ComponentFailedError, match="make jars"):
        _worker(tmp_path, 19404).jmx_exporter_options()


def test_the_rules_name_debeziums_mbeans_and_their_labels() -> None:
    rules = yaml.safe_load((repo_root() / "connect" / "jmx-exporter.yml").read_text())
    assert rules["includeObjectNames"] == ["debezium.*:type=connector-metrics,*"]
    generic = rules["rules"][-1]
    assert generic["name"] == "debezium_metrics_$4"
    assert set(generic["labels"]) == {"plugin", "context", "connector"}
    # the MBean names Debezium registers, as the exporter spells them for matching
    pattern = re.compile(generic["pattern"])
    match = pattern.fullmatch(
        "debezium.postgres<type=connector-metrics, context=streaming, server=cdcflow><>MilliSecondsBehindSource"
    )
    assert match is not None
    assert match.groups() == ("postgres", "streaming", "cdcflow", "MilliSecondsBehindSource")
    rows = re.compile(rules["rules"][0]["pattern"]).fullmatch(
        "debezium.postgres<type=connector-metrics, context=snapshot, server=cdcflow, key=lending.customers>"
        "<>RowsScanned"
    )
    assert rows is not None
    assert rows.groups() == ("postgres", "snapshot", "cdcflow", "lending.customers")


def test_status_tells_whether_the_exporter_answers(tmp_path: Path) -> None:
    registry = new_registry(with_process_metrics=False)
    with HealthServer("127.0.0.1", 0, registry, live=lambda: True, ready=lambda: True) as server:
        port = server.port
        serving = _worker(tmp_path, port).jmx_exporter_status()
    assert serving == {"jmx_exporter": f"http://127.0.0.1:{port}/metrics", "jmx_exporter_state": "serving"}
    # the port is free again, as for a worker started before the exporter was configured
    assert _worker(tmp_path, port).jmx_exporter_status()["jmx_exporter_state"] == "not serving"
    assert _worker(tmp_path, 0).jmx_exporter_status() == {}
