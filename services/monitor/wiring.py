"""The monitor's wiring: settings → probes, metrics, health server → ``Monitor.run()``."""

from __future__ import annotations

from contextlib import ExitStack

from prometheus_client import CollectorRegistry

from services import __version__
from services.common.health import HealthServer
from services.common.kafka.offsets import DlqTail, OffsetsReader
from services.common.lake import open_lake
from services.common.logging import get_logger
from services.common.metrics import MonitorMetrics, new_registry, register_build_info
from services.common.settings import Settings
from services.common.signals import Shutdown
from services.monitor.app import Monitor, Probe
from services.monitor.connectors import ConnectorProbe
from services.monitor.dlq import DlqProbe
from services.monitor.lag import LagProbe
from services.monitor.publications import PublicationProbe
from services.monitor.slots import SlotProbe
from services.monitor.transform import TransformProbe
from services.monitor.warehouse import BronzeReader, DuckDBBronze, WarehouseProbe
from services.stack.connect import connector_names
from services.stack.sources import sources

__all__ = ["build_probes", "run_monitor"]

# /healthz fails when a probe has not finished a poll for this many intervals (and at least a minute)
_STALLED_INTERVALS = 5


def build_probes(settings: Settings, metrics: MonitorMetrics) -> list[Probe]:
    """The probes ``settings.monitor.probes`` names, each with its own clients."""
    m = settings.monitor
    timeout = m.timeout_s
    connect_dir = settings.stack.connect_dir
    probes: list[Probe] = []
    for name in dict.fromkeys(m.probes):  # each probe once, in the order given
        if name == "kafka":
            reader = OffsetsReader(settings.kafka, timeout_s=timeout)
            probes.append(LagProbe(reader, metrics, group_prefix=m.group_prefix, max_samples=m.lag_samples))
        elif name == "postgres":
            probes.append(SlotProbe(settings.postgres.dsn(), metrics, timeout_s=timeout))
        elif name == "publications":
            exclude = settings.writer.exclude_tables
            probes.append(PublicationProbe(lambda: sources(settings), metrics, exclude=exclude, timeout_s=timeout))
        elif name == "connect":
            probes.append(
                ConnectorProbe(
                    settings.connect.url, metrics, defined=lambda: connector_names(connect_dir), timeout_s=timeout
                )
            )
        elif name == "warehouse":
            probes.append(WarehouseProbe(_bronze_reader(settings), metrics))
        elif name == "transform":
            probes.append(TransformProbe(open_lake(settings.lake, settings.lake_root()), metrics))
        elif name == "dlq":
            reader = OffsetsReader(settings.kafka, timeout_s=timeout)
            tail = DlqTail(settings.kafka, timeout_s=timeout)
            probes.append(DlqProbe(reader, tail, metrics, group_prefix=m.group_prefix))
    return probes


def _bronze_reader(settings: Settings) -> BronzeReader:
    w = settings.warehouse
    if w.backend == "duckdb":
        return DuckDBBronze(settings.duckdb_path())
    from services.monitor.warehouse_bigquery import BigQueryBronze
    from services.warehouse.bigquery import bigquery_client

    return BigQueryBronze(
        bigquery_client(w),
        dataset=w.bigquery_bronze_dataset,
        location=w.bigquery_location,
        timeout_s=settings.monitor.timeout_s,
    )


def run_monitor(settings: Settings, shutdown: Shutdown, *, registry: CollectorRegistry | None = None) -> int:
    """Run the monitor until ``shutdown``; ``registry`` lets an embedding process read its metrics."""
    log = get_logger("services.monitor")
    m = settings.monitor
    if registry is None:
        registry = new_registry()
        register_build_info(registry, __version__)
    log.info("monitor.config", settings=settings.safe_dump())
    metrics = MonitorMetrics(registry)
    monitor = Monitor(build_probes(settings, metrics), metrics, shutdown, interval_s=m.interval_s)
    with ExitStack() as stack:
        if m.health_port:
            stalled_after = max(60.0, _STALLED_INTERVALS * m.interval_s)
            health = HealthServer(
                m.health_host, m.health_port, registry, live=lambda: monitor.live(stalled_after), ready=monitor.ready
            )
            stack.enter_context(health)
            log.info("monitor.health", url=f"http://{m.health_host}:{health.port}/metrics")
        return monitor.run()
