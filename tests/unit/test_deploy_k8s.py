"""Every overlay renders, every object passes its published schema and cdcflow's deployment policies, and
each deliberately broken manifest in tests/fixtures/deploy/broken/ is rejected for the reason it names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.common.settings import MONITOR_PROBES
from tests.fixtures.deploy import (
    CHECKOUT,
    OVERLAYS,
    container_env,
    containers,
    load_documents,
    policy_violations,
    render,
    schema_errors,
    settings_of,
)

BROKEN = sorted((CHECKOUT / "tests" / "fixtures" / "deploy" / "broken").glob("*.yaml"))


def _kinds(overlay: str) -> set[str]:
    return {o["kind"] for o in render(overlay)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_its_schema(overlay: str) -> None:
    objects = render(overlay)
    assert len(objects) > 15
    errors = [error for obj in objects for error in schema_errors(obj)]
    assert errors == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_policy_holds(overlay: str) -> None:
    assert policy_violations(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_component_is_deployed(overlay: str) -> None:
    objects = render(overlay)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("Deployment", "cdcflow-writer"),
        ("ScaledObject", "cdcflow-writer"),
        ("PodDisruptionBudget", "cdcflow-writer"),
        ("StatefulSet", "cdcflow-loader"),
        ("Deployment", "cdcflow-monitor"),
        ("ServiceMonitor", "cdcflow-monitor"),
        ("CronJob", "cdcflow-dlq-replay"),
        ("StatefulSet", "cdcflow-enricher"),
        ("PrometheusRule", "cdcflow-alerts"),
        ("KafkaConnect", "cdcflow-connect"),
        ("KafkaConnector", "lending"),
        ("ServiceAccount", "cdcflow-writer"),
    } <= names
    assert {o["kind"] for o in objects} >= {"NetworkPolicy", "ServiceMonitor", "Role"}
    assert all(o["metadata"].get("namespace") == "cdcflow" for o in objects if o["kind"] != "Namespace")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_transform_runs_where_its_warehouse_lets_it(overlay: str) -> None:
    """On DuckDB one process may write the file: the loader runs the transform beside its loads. On BigQuery
    the transform is a CronJob of its own."""
    objects = render(overlay)
    (loader,) = [o for o in objects if (o["kind"], o["metadata"]["name"]) == ("StatefulSet", "cdcflow-loader")]
    (container,) = containers(loader)
    settings = settings_of(container_env(container, objects))
    beside = "--with-transform" in container["args"]
    jobs = [o for o in objects if (o["kind"], o["metadata"]["name"]) == ("CronJob", "cdcflow-transform")]
    expected = (True, 0) if settings.warehouse.backend == "duckdb" else (False, 1)
    assert (beside, len(jobs)) == expected, settings.warehouse.backend
    if beside:  # dbt's working copy in the pod's writable state folder (the root file system is read-only)
        assert settings.transform.work_dir.startswith("/var/lib/cdcflow/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_monitor_runs_every_probe_the_alert_rules_read(overlay: str) -> None:
    """A probe left out exports nothing (its alerts can never fire) or leaves its gauges at 0 (the transform's
    alerts would fire for ever). Only the warehouse probe needs a warehouse the monitor's pod can reach: a
    DuckDB file is the loader's alone."""
    objects = render(overlay)
    (monitor,) = [o for o in objects if (o["kind"], o["metadata"]["name"]) == ("Deployment", "cdcflow-monitor")]
    (container,) = containers(monitor)
    settings = settings_of(container_env(container, objects))
    unreachable = {"warehouse"} if settings.warehouse.backend == "duckdb" else set()
    assert sorted(settings.monitor.probes) == sorted({str(p) for p in MONITOR_PROBES} - unreachable)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_workload_runs_as_its_own_service_account(overlay: str) -> None:
    objects = render(overlay)
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "CronJob") and obj["metadata"]["name"].startswith("cdcflow-"):
            spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
            pod = spec["template"]["spec"]
            assert pod["serviceAccountName"] == obj["metadata"]["name"]
            assert pod["serviceAccountName"] in accounts
            assert pod["automountServiceAccountToken"] is False


def test_gke_keeps_secrets_by_reference_and_uses_workload_identity() -> None:
    objects = render("gke")
    assert [o for o in objects if o["kind"] == "Secret"] == []
    accounts = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert len(accounts) == 6
    for account in accounts:
        email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert email.startswith(account["metadata"]["name"] + "@")
    writer = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "cdcflow-writer")
    env = container_env(next(containers(writer)), objects)
    assert env["CDCFLOW_LAKE__BACKEND"] == "gcs"
    assert env["CDCFLOW_WAREHOUSE__BACKEND"] == "bigquery"


def test_the_dlq_replay_is_a_template_that_never_runs_on_its_own() -> None:
    for overlay in OVERLAYS:
        replay = next(
            o for o in render(overlay) if o["metadata"]["name"] == "cdcflow-dlq-replay" and o["kind"] == "CronJob"
        )
        assert replay["spec"]["suspend"] is True
        assert next(containers(replay))["args"] == ["dlq", "replay"]  # a dry run unless --execute is added


def test_the_alert_rules_are_the_prometheus_rule() -> None:

    rules = yaml.safe_load((CHECKOUT / "deploy" / "prometheus" / "cdcflow.rules.yml").read_text())
    rule = next(o for o in render("gke") if o["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == rules["groups"]


def test_gke_shards_the_loader_by_pod_ordinal() -> None:
    loader = next(o for o in render("gke") if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "cdcflow-loader")
    container = next(containers(loader))
    assert loader["spec"]["replicas"] == 3
    assert container["args"][-2:] == ["--shard", "$(LOADER_SHARD_INDEX)/$(LOADER_SHARDS)"]
    index = next(e for e in container["env"] if e["name"] == "LOADER_SHARD_INDEX")
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"


@pytest.mark.parametrize("fixture", BROKEN, ids=[p.stem for p in BROKEN])
def test_a_broken_manifest_is_rejected_for_its_reason(fixture: Path) -> None:
    expected = fixture.read_text(encoding="utf-8").splitlines()[0].removeprefix("# rejected: ")
    objects = load_documents(fixture)
    findings = [e for obj in objects for e in schema_errors(obj)] + policy_violations(objects)
    assert any(expected in finding for finding in findings), findings


def test_there_are_enough_broken_fixtures() -> None:
    assert len(BROKEN) >= 10


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_scrape_jobs_are_those_the_alert_rules_name(overlay: str) -> None:

    rules = (CHECKOUT / "deploy" / "prometheus" / "cdcflow.rules.yml").read_text()
    named = set(re.findall(r'job="([a-z]+)"', rules))
    jobs = set()
    for obj in render(overlay):
        if obj["kind"] in ("ServiceMonitor", "PodMonitor"):
            endpoints = obj["spec"].get("endpoints", []) + obj["spec"].get("podMetricsEndpoints", [])
            jobs |= {r["replacement"] for e in endpoints for r in e.get("relabelings", []) if r["targetLabel"] == "job"}
    # The transform is a CronJob here (or runs in the loader's process): between runs there is nothing to
    # scrape; the monitor's transform probe reads its runs from the lake.
    assert jobs == (named - {"transform"}) | {"enricher"}  # no rule names the enricher's job yet


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "NotIn" and value in expression["values"]:
            return False
    return True


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_each_worker_reach_what_its_settings_name(overlay: str) -> None:
    objects = render(overlay)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    checked = set()
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "CronJob") or not obj["metadata"]["name"].startswith(
            "cdcflow-"
        ):
            continue
        spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
        labels = spec["template"]["metadata"]["labels"]
        egress = [
            p for p in policies if "Egress" in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
        ]
        assert egress, f"{obj['metadata']['name']}: no egress policy (everything allowed)"
        allowed = {port["port"] for p in egress for rule in p["spec"]["egress"] for port in rule.get("ports", [])}
        settings = settings_of(container_env(next(containers(obj)), objects))
        needed = {53, settings.kafka.first_broker()[1], settings.postgres.port, settings.connect.port()}
        needed.add(_port(settings.lake.gcs_endpoint) if settings.lake.gcs_endpoint else 443)
        assert needed <= allowed, f"{obj['metadata']['name']}: {sorted(needed - allowed)} not allowed"
        checked.add(obj["metadata"]["name"])
    assert {"cdcflow-writer", "cdcflow-loader", "cdcflow-monitor", "cdcflow-enricher", "cdcflow-dlq-replay"} <= checked


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_network_policy_touches_the_operators_pods(overlay: str) -> None:
    strimzi = {
        "strimzi.io/cluster": "cdcflow-kafka",
        "strimzi.io/kind": "Kafka",
        "app.kubernetes.io/part-of": "cdcflow",
    }
    for policy in (o for o in render(overlay) if o["kind"] == "NetworkPolicy"):
        assert not _selects(policy["spec"]["podSelector"], strimzi), policy["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_alone_sets_the_writers_replicas(overlay: str) -> None:
    objects = render(overlay)
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] == "ScaledObject"}
    assert scaled == {"cdcflow-writer"}
    writer = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "cdcflow-writer")
    assert "replicas" not in writer["spec"]


def _pom_property(name: str) -> str:
    found = re.search(rf"<{re.escape(name)}>([^<]+)</", (CHECKOUT / "connect" / "pom.xml").read_text())
    assert found is not None, name
    return found.group(1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_and_debezium_versions_are_those_of_connect_pom(overlay: str) -> None:
    objects = render(overlay)
    kafka, debezium = _pom_property("kafka.version"), _pom_property("debezium.version")
    connect = next(o for o in objects if o["kind"] == "KafkaConnect")
    assert connect["spec"]["version"] == kafka
    artifacts = [a for p in connect["spec"]["build"]["plugins"] for a in p["artifacts"]]
    assert [(a["artifact"], a["version"]) for a in artifacts] == [("debezium-connector-postgres", debezium)]
    for cluster in (o for o in objects if o["kind"] == "Kafka"):
        assert cluster["spec"]["kafka"]["version"] == kafka
    compose = yaml.safe_load((CHECKOUT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka}"


def test_metrics_are_scraped_from_unready_pods_too() -> None:
    objects = render("gke")
    monitored = {
        o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for o in objects if o["kind"] == "ServiceMonitor"
    }
    services = {o["metadata"]["labels"]["app.kubernetes.io/name"]: o for o in objects if o["kind"] == "Service"}
    assert monitored == {"cdcflow-writer", "cdcflow-loader", "cdcflow-monitor", "cdcflow-enricher"}
    for name in monitored:
        assert services[name]["spec"]["publishNotReadyAddresses"] is True, name
