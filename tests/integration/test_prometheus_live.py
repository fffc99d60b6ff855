"""The dashboards and alert rules against a real Prometheus (Debian's server) scraping the real services.

The writer, loader, transform (scheduled), ``cdcflow monitor`` and the JMX exporter of a Connect worker run
on a source of the test's own (its own database, slot and topics, captured by a standalone Connect worker
with the exporter agent, so pausing the connector touches no other test) while the seeded workload writes to
it and one poison record reaches the DLQ. Then:

1. every query of every dashboard panel returns at least one series, every metric name a dashboard uses
   exists, and every alert expression evaluates. Alert expressions are empty on a healthy pipeline by
   design, so for them the rule is: every vector selector inside the expression returns a series (the
   alert's inputs exist with the labels it matches on, so it *can* fire), and the whole expression runs;
2. the connector is paused: CdcflowConnectorNotRunning goes pending, then firing (rules copied with every
   ``for`` cut to seconds and the lag SLO to ``LAG_SLO_S``); the connector is resumed;
3. the writer stops: the monitor's lag in seconds keeps growing while it is gone, the lag alert fires and
   Alertmanager (Debian's) posts it to a webhook in the test; the writer comes back and the resolved
   notification follows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.common.kafka import producer
from services.monitor.lag import STUCK_POLLS
from services.stack.children import ServiceChild, service_env
from tests.fixtures.monitoring import (
    RULES_DIR,
    alerts,
    dashboards,
    metric_names,
    panel_queries,
    selectors,
    variable_metrics,
)
from tests.fixtures.net import free_port
from tests.fixtures.pipeline import WorkloadThread
from tests.fixtures.prometheus import Alertmanager, PrometheusServer, WebhookReceiver, poll
from tests.fixtures.standalone_connect import OwnSource

FOR = "4s"  # every alert's `for` in the test copy of the rules
LAG_SLO_S = 10  # the lag alert's threshold in the test copy (300 s in the rules)
RATE_WINDOW = "30s"  # $__rate_interval: thirty 1 s scrapes
LAG_ALERT = "CdcflowConsumerLagHigh"


@dataclass
class Pipeline:
    """The services of the test, each a child process with its own /metrics port."""

    group: str
    source: OwnSource
    children: dict[str, ServiceChild]
    ports: dict[str, int]

    def monitor_lag_seconds(self) -> float:
        """The largest lag in seconds of the group, read straight from cdcflow monitor's /metrics."""
        return max(self.monitor_lag_by_partition().values())

    def monitor_lag_by_partition(self) -> dict[tuple[str, str], float]:
        """The group's lag in seconds per topic and partition, from cdcflow monitor's /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.ports['monitor']}/metrics", timeout=5).text
        values = {
            (sample.labels["topic"], sample.labels["partition"]): sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "cdcflow_consumer_lag_seconds"
            for sample in family.samples
            if sample.labels.get("group") == self.group
        }
        assert values, f"cdcflow monitor reports no lag for {self.group}"
        return values

    def wait_for_monitor_polls(self, polls: int) -> None:
        """Until the monitor has polled ``polls`` more times: each poll dates a partition's lag from a new
        "now", so one partition's series takes a new value per poll (a slow poll on a busy host takes longer
        than its interval)."""
        series = max(self.monitor_lag_by_partition().items(), key=lambda kv: kv[1])[0]
        seen = [self.monitor_lag_by_partition()[series]]

        def polled() -> bool:
            value = self.monitor_lag_by_partition().get(series)
            if value is not None and value != seen[-1]:
                seen.append(value)
            return len(seen) > polls

        poll(f"{polls} polls of the monitor", polled, timeout_s=120, interval_s=0.1)


def _rules_for_the_test() -> dict[str, Any]:
    """The rules with every `for` cut to seconds and the lag SLO cut to LAG_SLO_S: same expressions else."""
    document: dict[str, Any] = yaml.safe_load((RULES_DIR / "cdcflow.rules.yml").read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["for"] = FOR
            if rule["alert"] == LAG_ALERT:
                assert rule["expr"].count("> 300") == 1
                rule["expr"] = rule["expr"].replace("> 300", f"> {LAG_SLO_S}")
    return document


@pytest.fixture
def pipeline(own_source: OwnSource, tmp_path: Path) -> Iterator[Pipeline]:
    group = f"cdcflow-prom-{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("writer", "loader", "transform", "monitor")}
    env = service_env(
        own_source.settings,
        CDCFLOW_LAKE__ROOT=str(tmp_path / "lake"),
        CDCFLOW_WAREHOUSE__DUCKDB_PATH=str(tmp_path / "warehouse.duckdb"),
        CDCFLOW_TRANSFORM__WORK_DIR=str(tmp_path / "transform"),
        CDCFLOW_CONNECT__CONNECTOR=own_source.name,
        CDCFLOW_CONNECT__URL=own_source.settings.connect.url,
        CDCFLOW_WRITER__GROUP_ID=group,
        CDCFLOW_WRITER__STATE_DIR=str(tmp_path / "writer-state"),
        CDCFLOW_WRITER__FLUSH_MAX_AGE_S="1",
        CDCFLOW_WRITER__HEALTH_PORT=str(ports["writer"]),
        CDCFLOW_LOADER__INTERVAL_S="1",
        CDCFLOW_LOADER__HEALTH_PORT=str(ports["loader"]),
        CDCFLOW_TRANSFORM__HEALTH_PORT=str(ports["transform"]),
        CDCFLOW_MONITOR__HEALTH_PORT=str(ports["monitor"]),
        CDCFLOW_MONITOR__INTERVAL_S="1",
        CDCFLOW_MONITOR__GROUP_PREFIX=group,
    )
    logs = tmp_path / "logs"
    children = {
        "writer": ServiceChild("services.consumer", env, logs / "writer.log"),
        "loader": ServiceChild("services.loader", env, logs / "loader.log"),
        # one dbt build at start, then the scheduler idles: its metrics are what the dashboards read
        "transform": ServiceChild("services.transform", env, logs / "transform.log", ["--every", "3600"]),
        "monitor": ServiceChild("services.monitor", env, logs / "monitor.log"),
    }
    try:
        for child in children.values():
            child.start()
        yield Pipeline(group, own_source, children, ports)
    finally:
        for child in children.values():
            child.stop(grace_s=30)


def _produce_poison(source: OwnSource) -> None:
    """One record no decoder can read, on a captured topic: the writer sends it to its DLQ."""
    client = producer(source.settings.kafka)
    client.produce(f"{source.settings.kafka.topic_prefix}.lending.customers", key=b"poison", value=b"{not json")
    assert client.flush(30) == 0


def _missing_series(prometheus: PrometheusServer) -> list[str]:
    """Every dashboard query and every alert input that returns no series yet."""
    missing = [
        f"{board} / {title}: {expr}" for board, title, expr in panel_queries(RATE_WINDOW) if not prometheus.query(expr)
    ]
    missing += [f"variable: {name}" for name in sorted(variable_metrics()) if not prometheus.query(name)]
    for alert in alerts():
        missing += [f"{alert['alert']}: {s}" for s in selectors(alert["expr"]) if not prometheus.query(s)]
    return missing


def _check_dashboards_and_alerts(prometheus: PrometheusServer) -> None:
    missing: list[str] = []

    def complete() -> bool:
        missing[:] = _missing_series(prometheus)
        return not missing

    try:
        poll("every dashboard query and alert input to return series", complete, timeout_s=240, interval_s=3)
    except AssertionError:
        raise AssertionError("no series for:\n" + "\n".join(missing)) from None
    used = set(variable_metrics())
    for _, _, expr in panel_queries(RATE_WINDOW):
        used |= metric_names(expr)
    assert used - prometheus.metric_names() == set()
    for alert in alerts():
        prometheus.query(alert["expr"])  # evaluates without error (empty while healthy)
    assert len(list(panel_queries())) >= 30
    assert len(dashboards()) == 3


def _pause_fires_the_connector_alert(prometheus: PrometheusServer, source: OwnSource) -> None:
    connector = source.name
    url = f"{source.settings.connect.url}/connectors/{connector}"
    assert httpx.put(f"{url}/pause", timeout=10).status_code == 202
    try:
        seen: set[str] = set()

        def state(wanted: str) -> bool:
            seen.update(a["state"] for a in prometheus.alerts("CdcflowConnectorNotRunning", connector=connector))
            return wanted in seen

        poll("CdcflowConnectorNotRunning to be pending", lambda: state("pending"), timeout_s=60, interval_s=0.2)
        poll("CdcflowConnectorNotRunning to fire", lambda: state("firing"), timeout_s=60, interval_s=0.2)
    finally:
        assert httpx.put(f"{url}/resume", timeout=10).status_code == 202
        source.worker.wait_running(connector, timeout_s=120)


def _stopped_writer_keeps_lag_growing_and_alerts(
    pipeline: Pipeline, prometheus: PrometheusServer, webhook: WebhookReceiver
) -> None:
    # a lag alert of the writer's start-up (its first poll may come after LAG_SLO_S) must be over first, or
    # Alertmanager, which notifies changes, would have nothing new to say when the writer stops
    poll(
        "the lag alert of the start-up to be over",
        lambda: not prometheus.alerts(LAG_ALERT, group=pipeline.group),
        timeout_s=120,
    )
    before = len(webhook.notifications)
    writer = pipeline.children["writer"]
    assert writer.stop(grace_s=60) == 0
    # while the group moves, a record's age is interpolated between two sightings of the watermark and may
    # exceed its true age by up to one poll; once the committed offsets have stayed put for STUCK_POLLS polls,
    # the monitor reads the records' own timestamps, and from then on the lag must only grow
    pipeline.wait_for_monitor_polls(STUCK_POLLS + 2)  # + the poll that saw the last commit, + one partial poll
    samples = []
    for _ in range(6):
        time.sleep(2)
        samples.append(pipeline.monitor_lag_seconds())
    assert samples == sorted(samples), f"lag in seconds did not keep growing: {samples}"
    assert samples[-1] - samples[0] >= 6, f"lag in seconds did not follow the clock: {samples}"
    from_prometheus = prometheus.query(f'max(cdcflow_consumer_lag_seconds{{job="monitor", group="{pipeline.group}"}})')
    assert from_prometheus
    assert float(from_prometheus[0]["value"][1]) > 0
    assert prometheus.query('up{job="writer"} == 0'), "the writer's target should be down"

    def notified(status: str, since: int) -> bool:
        return status in webhook.statuses(LAG_ALERT, since, group=pipeline.group)

    poll("the firing lag alert at the webhook", lambda: notified("firing", before), timeout_s=120)
    back = len(webhook.notifications)
    writer.start()
    poll("the resolved lag alert at the webhook", lambda: notified("resolved", back), timeout_s=180)


@pytest.mark.timeout(900)
def test_dashboards_and_alerts_on_a_live_prometheus(pipeline: Pipeline, tmp_path: Path) -> None:
    source = pipeline.source
    with ExitStack() as cleanup:
        webhook = WebhookReceiver()
        cleanup.callback(webhook.close)
        alertmanager = Alertmanager(tmp_path / "alertmanager", free_port())
        cleanup.callback(alertmanager.stop)
        alertmanager.start(webhook.url, [f'alertname="{LAG_ALERT}"', f'group="{pipeline.group}"'])
        prometheus = PrometheusServer(tmp_path / "prometheus", free_port())
        cleanup.callback(prometheus.stop)
        targets = {job: f"127.0.0.1:{port}" for job, port in pipeline.ports.items()}
        targets["connect"] = f"127.0.0.1:{source.settings.connect.jmx_exporter_port}"
        prometheus.start(targets, _rules_for_the_test(), alertmanager=f"127.0.0.1:{alertmanager.port}")

        workload = WorkloadThread(source.settings, seed=1404, rate=20, duration_s=600)
        workload.start()
        cleanup.callback(workload.join, 60)
        cleanup.callback(workload.stop.set)
        _produce_poison(source)

        _check_dashboards_and_alerts(prometheus)
        _pause_fires_the_connector_alert(prometheus, source)
        _stopped_writer_keeps_lag_growing_and_alerts(pipeline, prometheus, webhook)
        assert workload.error is None, workload.error
