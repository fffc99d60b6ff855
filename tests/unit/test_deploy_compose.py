"""docker-compose.yml passes the Compose specification's schema and the Compose project loader itself, comes
up in order, and sets cdcflow only through real CDCFLOW_* settings on the ports the settings model names."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.common.health import HealthServer
from services.common.settings import load_settings
from tests.fixtures.deploy import CHECKOUT, setting_exists, tool

COMPOSE = CHECKOUT / "docker-compose.yml"
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))
SECTIONS = {"consume": "writer", "load": "loader", "transform": "transform", "monitor": "monitor", "enrich": "enricher"}


def _load(path: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
    argv = [str(tool("composecheck"))]
    for profile in profiles:
        argv += ["-profile", profile]
    return subprocess.run([*argv, str(path)], capture_output=True, text=True, timeout=60, check=False)


@functools.cache
def _project_json() -> str:
    done = _load(COMPOSE, "*")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _project() -> dict[str, Any]:
    project: dict[str, Any] = json.loads(_project_json())
    return project


def test_the_compose_schema_accepts_it() -> None:
    done = subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_loader_accepts_it_with_and_without_the_gcs_profile() -> None:
    plain = _load(COMPOSE)
    assert plain.returncode == 0, plain.stderr
    assert "gcs" not in json.loads(plain.stdout)["services"]
    assert "gcs" in _project()["services"]


def test_the_loader_rejects_an_undefined_dependency_and_an_unset_variable(tmp_path: Path) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    dangling = tmp_path / "dangling.yml"
    dangling.write_text(
        text.replace("      register-connectors:\n        condition:", "      no-such-service:\n        condition:")
    )
    done = _load(dangling)
    assert done.returncode == 1
    assert 'undefined service "no-such-service"' in done.stderr
    unset = tmp_path / "unset.yml"
    unset.write_text(text.replace("${IMAGE:-cdcflow:0.1.0}", "${IMAGE}"))
    done = _load(unset)
    assert done.returncode == 1
    assert "${IMAGE}" in done.stderr
    assert "no default" in done.stderr


def test_services_come_up_in_order() -> None:
    services = _project()["services"]
    needs = {name: svc.get("depends_on", {}) for name, svc in services.items()}
    assert needs["connect"]["kafka"]["condition"] == "service_healthy"
    assert needs["connect"]["postgres"]["condition"] == "service_healthy"
    assert needs["register-connectors"]["connect"]["condition"] == "service_healthy"
    assert needs["writer"]["register-connectors"]["condition"] == "service_completed_successfully"
    assert needs["loader"]["writer"]["condition"] == "service_healthy"
    for name in ("postgres", "kafka", "connect", "writer", "loader", "prometheus"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert "wal_level=logical" in services["postgres"]["command"]


def _cdcflow_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _project()["services"].items() if s.get("image", "").startswith("cdcflow:")}


def test_every_cdcflow_variable_is_a_real_setting() -> None:
    for name, service in _project()["services"].items():
        env = {k: v for k, v in (service.get("environment") or {}).items() if k.startswith("CDCFLOW_")}
        unknown = [k for k in env if not setting_exists(k)]
        assert unknown == [], f"{name}: {unknown}"
        load_settings(env)  # raises ConfigError on a value the settings refuse


def test_every_cdcflow_variable_the_file_interpolates_is_a_real_setting() -> None:
    names = set(re.findall(r"\$\{(CDCFLOW_[A-Z0-9_]+)", COMPOSE.read_text(encoding="utf-8")))
    assert "CDCFLOW_LAKE__BACKEND" in names
    assert [n for n in sorted(names) if not setting_exists(n)] == []


def test_health_endpoints_listen_on_all_interfaces_on_the_configured_port() -> None:
    checked = 0
    for name, service in _cdcflow_services().items():
        section = SECTIONS.get(service["command"][0])
        if section is None:
            continue
        settings = getattr(load_settings(service["environment"]), section)
        assert settings.health_host == "0.0.0.0", name
        assert f"http://127.0.0.1:{settings.health_port}/healthz" in service["healthcheck"]["test"], name
        checked += 1
    assert checked >= 3


def test_every_volume_a_cdcflow_service_writes_is_prepared_by_the_image() -> None:
    dockerfile = (CHECKOUT / "deploy" / "docker" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", dockerfile)  # continuation lines
    prepared = re.search(r"install -d -o 10001 -g 10001 -m 0750 ([^\n]+)", joined)
    assert prepared is not None
    folders = set(prepared.group(1).split())
    for name, service in _cdcflow_services().items():
        for volume in service.get("volumes", []):
            if volume["type"] == "volume":
                assert volume["target"] in folders, f"{name}: {volume['target']} would be owned by root"


def test_the_cdcflow_services_run_from_a_read_only_root() -> None:
    services = _cdcflow_services()
    assert {"register-connectors", "writer", "loader"} <= set(services)
    for name, service in services.items():
        assert service.get("read_only") is True, name


def test_the_loader_runs_the_transform_beside_its_loads_on_duckdb() -> None:
    """One process writes the DuckDB file: loads and dbt share it instead of taking turns at its lock."""
    services = _project()["services"]
    loader = services["loader"]
    settings = load_settings(loader["environment"])
    assert settings.warehouse.backend == "duckdb"
    assert "--with-transform" in loader["command"]
    assert "transform" not in services  # no second process at the file
    work_dir = str(settings.transform.work_dir)
    assert any(v["type"] == "volume" and v["target"] == work_dir for v in loader["volumes"])
    monitor = services["monitor"]  # reads the transform's runs from the same volume
    assert load_settings(monitor["environment"]).transform.work_dir == settings.transform.work_dir
    assert any(v["target"] == work_dir and v.get("read_only") for v in monitor["volumes"])


@pytest.mark.parametrize("mounted", ["deploy/prometheus/cdcflow.rules.yml", "deploy/grafana/dashboards"])
def test_monitoring_mounts_exist(mounted: str) -> None:
    sources = {
        Path(v["source"]) for s in _project()["services"].values() for v in s.get("volumes", []) if v["type"] == "bind"
    }
    assert (CHECKOUT / mounted).resolve() in {p.resolve() for p in sources}
    assert (CHECKOUT / mounted).exists()


def test_prometheus_scrapes_each_service_on_its_health_port() -> None:

    config = yaml.safe_load((CHECKOUT / "deploy" / "docker" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    expected = {"connect": ["connect:9404"]}  # the Connect image's JMX exporter
    for name, service in _cdcflow_services().items():
        section = SECTIONS.get(service["command"][0])
        if section is not None:
            expected[section] = [f"{name}:{getattr(load_settings(service['environment']), section).health_port}"]
    assert jobs == expected


def test_every_scrape_job_the_alert_rules_name_exists() -> None:

    rules = (CHECKOUT / "deploy" / "prometheus" / "cdcflow.rules.yml").read_text()
    named = set(re.findall(r'job="([a-z]+)"', rules))
    assert named
    config = yaml.safe_load((CHECKOUT / "deploy" / "docker" / "prometheus.yml").read_text())
    scraped = {job["job_name"] for job in config["scrape_configs"]}
    # CdcflowTransformDown looks for the transform's metrics from job="transform" or a loader that runs it:
    # here the loader does (test_the_loader_runs_the_transform_beside_its_loads_on_duckdb)
    assert named - {"transform"} <= scraped
    assert "transform" not in scraped


def test_the_compose_schema_rejects_an_unknown_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text(
        COMPOSE.read_text(encoding="utf-8").replace('    command: ["consume"]', '    commandz: ["consume"]')
    )
    done = subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "commandz" in done.stdout


@pytest.mark.parametrize("live", [True, False])
def test_the_health_checks_pass_and_fail_with_the_health_server(live: bool) -> None:
    checked = 0
    with HealthServer("127.0.0.1", 0, CollectorRegistry(), live=lambda: live, ready=lambda: True) as server:
        for name, service in _cdcflow_services().items():
            if "healthcheck" not in service:
                continue
            kind, *argv = service["healthcheck"]["test"]
            assert kind == "CMD", name
            argv = [re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{server.port}", a) for a in argv]
            argv[0] = sys.executable if argv[0] == "python" else argv[0]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            assert (done.returncode == 0) is live, f"{name}: {done.stderr[-500:]}"
            checked += 1
    assert checked >= 4
