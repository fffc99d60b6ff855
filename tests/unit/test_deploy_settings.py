"""The manifests agree with the code: ports and probe paths with the settings model and the health server,
the Strimzi connectors with connect/connectors/*.json, the generated files with their sources."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.common.health import HealthServer
from services.deploy.manifests import connector_from_strimzi, render, strimzi_connector, sync
from services.stack.sources import FIDELITY
from tests.fixtures.deploy import CHECKOUT, OVERLAYS, container_env, containers, settings_of
from tests.fixtures.deploy import render as render_overlay

SECTIONS = {"consume": "writer", "load": "loader", "transform": "transform", "monitor": "monitor", "enrich": "enricher"}
CDCFLOW = str(Path(sys.executable).with_name("cdcflow"))


def _served_paths(paths: set[str]) -> dict[str, int]:
    """What the real health server answers on each path (both probes passing)."""
    with HealthServer("127.0.0.1", 0, CollectorRegistry(), live=lambda: True, ready=lambda: True) as server:
        return {path: httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=5).status_code for path in paths}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probe_paths_match_the_settings_and_the_health_server(overlay: str) -> None:
    objects = render_overlay(overlay)
    paths: set[str] = set()
    checked = 0
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in containers(obj, init=False):
            section = SECTIONS.get(container.get("args", [""])[0])
            if section is None:
                continue
            settings = getattr(settings_of(container_env(container, objects)), section)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["health"] == settings.health_port
            assert settings.health_host == "0.0.0.0"  # the kubelet probes from outside the pod
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"]["port"] in ("health", settings.health_port)
                paths.add(container[probe]["httpGet"]["path"])
            checked += 1
    assert checked >= 4
    assert {"/healthz", "/readyz"} <= paths
    assert _served_paths(paths) == dict.fromkeys(paths, 200)


def test_strimzi_connectors_equal_the_connector_files() -> None:
    objects = render_overlay("gke")
    connectors = {o["metadata"]["name"]: o for o in objects if o["kind"] == "KafkaConnector"}
    files = sorted((CHECKOUT / "connect" / "connectors").glob("*.json"))
    assert sorted(connectors) == [f.stem for f in files]
    for path in files:
        document = json.loads(path.read_text(encoding="utf-8"))
        assert connector_from_strimzi(connectors[path.stem]) == document["config"]
        assert connectors[path.stem]["metadata"]["labels"]["strimzi.io/cluster"] == "cdcflow-connect"


def test_a_connector_without_a_class_is_refused() -> None:
    from services.deploy.errors import DeployError

    with pytest.raises(DeployError, match=r"connector\.class"):
        strimzi_connector("x", {"config": {"tasks.max": "1"}})
    with pytest.raises(DeployError, match=r"tasks\.max"):
        strimzi_connector("x", {"config": {"connector.class": "C", "tasks.max": "many"}})


def test_the_generated_files_are_up_to_date() -> None:
    done = subprocess.run(
        [CDCFLOW, "deploy", "generate", "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_generate_writes_what_check_reports_stale(tmp_path: Path) -> None:
    (tmp_path / "connect" / "connectors").mkdir(parents=True)
    (tmp_path / "services" / "stack").mkdir(parents=True)
    (tmp_path / "services" / "stack" / "capture.sql").write_text("create schema cdcflow;\n")
    (tmp_path / "services" / "stack" / "schema.sql").write_text("create schema demo;\n")
    (tmp_path / "connect" / "jmx-exporter.yml").write_text("rules: []\n")
    config = {"connector.class": "C", "tasks.max": "2", "topic.prefix": "shop", **FIDELITY}
    (tmp_path / "connect" / "connectors" / "shop.json").write_text(json.dumps({"name": "shop", "config": config}))
    assert sorted(sync(tmp_path, check=True).written) == sorted(render(tmp_path))
    assert not (tmp_path / "deploy").exists()  # --check changes nothing
    report = sync(tmp_path)
    assert report.changed
    assert not sync(tmp_path, check=True).changed
    generated = (tmp_path / "deploy/k8s/base/generated/kafkaconnectors.yaml").read_text()
    assert "tasksMax: 2" in generated
    assert "tasks.max" not in generated


def test_a_connector_file_whose_events_the_writer_would_misread_is_refused(tmp_path: Path) -> None:
    from services.deploy.errors import DeployError

    (tmp_path / "connect" / "connectors").mkdir(parents=True)
    config = {"connector.class": "C", "tasks.max": "1", **FIDELITY, "time.precision.mode": "connect"}
    (tmp_path / "connect" / "connectors" / "shop.json").write_text(json.dumps({"name": "shop", "config": config}))
    with pytest.raises(DeployError, match=r"shop\.json: time\.precision\.mode is 'connect'"):
        render(tmp_path)


def _env_references(config: dict[str, str]) -> set[str]:
    return {m for value in config.values() for m in re.findall(r"\$\{env:([A-Za-z0-9_]+)\}", value)}


def test_connect_has_every_variable_the_connectors_reference() -> None:
    files = sorted((CHECKOUT / "connect" / "connectors").glob("*.json"))
    wanted = set().union(*(_env_references(json.loads(f.read_text())["config"]) for f in files))
    assert "CDCFLOW_POSTGRES__PASSWORD" in wanted
    for overlay in OVERLAYS:
        connect = next(o for o in render_overlay(overlay) if o["kind"] == "KafkaConnect")
        env = {e["name"] for e in connect["spec"]["template"]["connectContainer"]["env"]}
        assert wanted <= env, f"{overlay}: {sorted(wanted - env)}"
        assert connect["spec"]["config"]["config.providers"] == "env"
    compose = yaml.safe_load((CHECKOUT / "docker-compose.yml").read_text())
    assert wanted <= set(compose["services"]["connect"]["environment"])
