"""The enricher's wiring: settings → store, table reader, consumer, transactional producer, health → ``run``."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from contextlib import ExitStack

from prometheus_client import CollectorRegistry

from services import __version__
from services.common.errors import ConfigError
from services.common.health import HealthServer
from services.common.kafka import TransactionalProducer, consumer, ensure_topics, topic_watermarks
from services.common.logging import get_logger
from services.common.metrics import EnricherMetrics, new_registry, register_build_info
from services.common.settings import Settings
from services.common.signals import Shutdown
from services.consumer.dlq import DlqPublisher, dlq_topic
from services.enricher.app import Enricher, Topics
from services.enricher.store import TableStore
from services.enricher.tables import TableReader, TableTopic

__all__ = ["enricher_topics", "run_enricher", "transactional_id"]

_STALLED_S = 60.0  # /healthz fails when the loop has not polled for this long
SOURCE_SCHEMA = "lending"


def enricher_topics(settings: Settings) -> dict[str, str]:
    """The topics the enricher reads and writes, under the stack's topic prefix."""
    prefix = settings.kafka.topic_prefix
    return {
        "input": f"{prefix}.{SOURCE_SCHEMA}.transactions",
        "customers": f"{prefix}.{SOURCE_SCHEMA}.customers",
        "facilities": f"{prefix}.{SOURCE_SCHEMA}.facilities",
        "heartbeat": f"{prefix}.cdcflow.heartbeat",
        "output": f"{prefix}.enriched.transactions",
        "dlq": dlq_topic(settings.enricher.group_id),
    }


def transactional_id(settings: Settings) -> str:
    """``<group>.<instance id>``: the same for every start of one instance, so a restart fences its predecessor."""
    e = settings.enricher
    return f"{e.group_id}.{e.instance_id or socket.gethostname()}"


def _member(settings: Settings) -> dict[str, str]:
    """Static membership under the instance id: a restarted instance takes its partitions back at once instead
    of waiting for its predecessor's session to time out, and a second one with the same id fences the first."""
    return {"isolation.level": "read_committed", "group.instance.id": transactional_id(settings)}


def _tune_collector() -> None:
    """Freeze what start-up made and collect less often, as the lake writer does (services/consumer/wiring.py).

    Each event makes a handful of short-lived objects and no reference cycles; with the default thresholds
    the cyclic collector ran every 700 allocations and re-scanned the modules and clients that stay alive —
    a tenth of the enricher's CPU time.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run_enricher(settings: Settings, shutdown: Shutdown, *, registry: CollectorRegistry | None = None) -> int:
    """Run the enricher until ``shutdown``; ``registry`` lets an embedding process read its metrics."""
    log = get_logger("services.enricher")
    if settings.writer.value_format != "json":
        raise ConfigError(
            f"the enricher reads Debezium JSON change events, and CDCFLOW_WRITER__VALUE_FORMAT="
            f"{settings.writer.value_format} says the captured topics hold Avro: it would dead-letter every change"
            " and join nothing. Run it on a source whose connector writes JSON (JsonConverter)"
        )
    e = settings.enricher
    if threading.current_thread() is threading.main_thread():
        shutdown.arm(e.grace_s)
    if registry is None:
        registry = new_registry()
        register_build_info(registry, __version__)
    names = enricher_topics(settings)
    ensure_topics(settings.kafka, [names["output"], names["dlq"]])
    with ExitStack() as stack:
        store = TableStore(settings.enricher_state_dir(), map_size=e.store_map_bytes, max_versions=e.max_versions)
        stack.callback(store.close)
        metrics = EnricherMetrics(registry)
        table_client = consumer(
            settings.kafka, f"{e.group_id}.tables", **{"isolation.level": "read_committed"}
        )  # assigned, never subscribed: joins no group and commits nothing
        stack.callback(table_client.close)
        # a customers or facilities record the enricher cannot use: to its DLQ, beside the transactions' ones
        table_dlq = DlqPublisher(settings.kafka, e.group_id, transactional_id(settings))
        stack.callback(table_dlq.close)
        tables = TableReader(
            table_client,
            store,
            [
                TableTopic(names["customers"], "customers", "customer_id"),
                TableTopic(names["facilities"], "facilities", "facility_id"),
            ],
            names["heartbeat"],
            metrics,
            dlq=table_dlq,
        )
        enricher = Enricher(
            e,
            topics=Topics(
                names["input"], names["output"], names["dlq"], len(topic_watermarks(settings.kafka, names["dlq"]))
            ),
            store=store,
            tables=tables,
            client=consumer(settings.kafka, e.group_id, **_member(settings)),
            producer=TransactionalProducer(settings.kafka, transactional_id(settings)),
            metrics=metrics,
            shutdown=shutdown,
        )
        log.info(
            "enricher.config",
            settings=settings.safe_dump(),
            transactional_id=transactional_id(settings),
            pid=os.getpid(),
            topics=names,
        )
        if e.health_port:
            health = HealthServer(
                e.health_host,
                e.health_port,
                registry,
                live=lambda: time.monotonic() - enricher.last_poll_at < _STALLED_S or not enricher.ready,
                ready=lambda: enricher.ready,
            )
            stack.enter_context(health)
            log.info("enricher.health", url=f"http://{e.health_host}:{health.port}/metrics")
        if threading.current_thread() is threading.main_thread():  # its own process, not embedded (the demo)
            _tune_collector()
        return enricher.run()
