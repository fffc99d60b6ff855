"""The lake writer's wiring: settings → lake, contracts, router, metrics, health → ``LakeWriter.run()``."""

from __future__ import annotations

import ctypes
import gc
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pyarrow as pa
from prometheus_client import CollectorRegistry

from services import __version__
from services.common.contracts import ContractRegistry, load_contracts
from services.common.contracts.reserved import warehouse_limits
from services.common.contracts.store import contracts_from_lake
from services.common.debezium.arrow_reader import NATIVE_READER
from services.common.errors import ConfigError
from services.common.health import HealthServer
from services.common.kafka.batch_consumer import NATIVE_CONSUMER
from services.common.lake import Lake, LakeOpener, open_lake
from services.common.libc import is_glibc
from services.common.logging import get_logger
from services.common.metrics import WriterMetrics, new_registry, register_build_info
from services.common.settings import Settings
from services.common.signals import Shutdown
from services.consumer.app import LakeWriter
from services.consumer.evolution import CatalogEvolution
from services.consumer.routing import Router
from services.consumer.type_changes import TypeChangeCheck

__all__ = ["WriterPath", "open_router", "run_writer", "tune_allocator", "tune_collector", "writer_path"]

_STALLED_S = 60.0  # /healthz fails when the loop has not polled for this long
# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on every version


def run_writer(
    settings: Settings,
    shutdown: Shutdown,
    *,
    registry: CollectorRegistry | None = None,
    lake_opener: LakeOpener = open_lake,
) -> int:
    """Run the lake writer until ``shutdown``; ``registry`` lets an embedding process read its metrics, and
    ``lake_opener`` opens the lake it writes to (a test's may wrap the real one)."""
    log = get_logger("services.consumer")
    w = settings.writer
    if threading.current_thread() is threading.main_thread():
        # the writer owns the process: a SIGTERM from here on ends it within grace_s, cleanly or not (a host
        # that runs the writer in a thread, the demo, keeps its own deadline)
        shutdown.arm(w.grace_s)
    worker_id = w.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    if registry is None:
        registry = new_registry()
        register_build_info(registry, __version__)
    with ExitStack() as stack:
        lake = lake_opener(settings.lake, settings.lake_root())
        stack.callback(lake.close)
        contracts = _contracts(settings, lake)
        log.info("writer.config", settings=settings.safe_dump(), contracts=contracts.as_dict(), worker=worker_id)
        path = writer_path(w.consumer, w.json_reader)
        router = _router(settings, contracts, path)
        stack.callback(router.close)
        metrics = WriterMetrics(registry)
        evolution = (
            CatalogEvolution(
                settings.postgres.catalog_dsn(),
                lake,
                metrics,
                exclude_columns=w.exclude_columns,
                warehouse=warehouse_limits(settings.warehouse.backend),
                timeout_s=w.catalog_timeout_s,
                source=settings.kafka.source(),
            )
            if w.schema_evolution == "catalog"
            else None
        )
        log.info(
            "writer.path",
            consumer="native" if path.native_consumer else "confluent",
            decoder="native JSON reader" if path.native_reader else "Arrow's JSON reader",
            why=f"CDCFLOW_WRITER__CONSUMER={w.consumer} CDCFLOW_WRITER__JSON_READER={w.json_reader}",
        )
        writer = LakeWriter(
            settings,
            native=path.native_consumer,
            lake=lake,
            router=router,
            metrics=metrics,
            shutdown=shutdown,
            worker_id=worker_id,
            evolution=evolution,
            type_check=TypeChangeCheck(
                settings.postgres.catalog_dsn(), exclude_columns=w.exclude_columns, timeout_s=w.catalog_timeout_s
            ),
        )
        if w.health_port:
            health = HealthServer(
                w.health_host,
                w.health_port,
                registry,
                live=lambda: writer.examining or time.monotonic() - writer.last_poll_at < _STALLED_S,
                ready=lambda: writer.ready,
            )
            stack.enter_context(health)
            log.info("writer.health", url=f"http://{w.health_host}:{health.port}/metrics")
        return writer.run()


@contextmanager
def open_router(settings: Settings) -> Iterator[Router]:
    """A router over the same contracts as the writer's, for a process that only decodes (the quarantine's)."""
    with ExitStack() as stack:
        lake = open_lake(settings.lake, settings.lake_root())
        stack.callback(lake.close)
        w = settings.writer
        router = _router(settings, _contracts(settings, lake), writer_path(w.consumer, w.json_reader))
        stack.callback(router.close)
        yield router


def _contracts(settings: Settings, lake: Lake) -> ContractRegistry:
    """The repository's contracts, then versions evolved at run time (newest wins)."""
    return ContractRegistry.of([*load_contracts(settings.writer.contracts_dir), *contracts_from_lake(lake)])


@dataclass(frozen=True, slots=True)
class WriterPath:
    """What the writer consumes and decodes with: each native part where it was built, unless set otherwise."""

    native_consumer: bool
    native_reader: bool

    def describe(self) -> str:
        consumer = "the native consumer" if self.native_consumer else "confluent_kafka's consumer"
        reader = "the native JSON reader" if self.native_reader else "Arrow's JSON reader"
        return f"{consumer} and {reader}"


def writer_path(consumer: str, json_reader: str) -> WriterPath:
    """``CDCFLOW_WRITER__CONSUMER`` and ``CDCFLOW_WRITER__JSON_READER`` (auto: native where built). The two are
    independent: the confluent consumer (OAUTHBEARER, GSSAPI, callbacks) still decodes natively where it can."""
    missing = [
        f"CDCFLOW_WRITER__{key}=native"
        for key, choice, built in (("CONSUMER", consumer, NATIVE_CONSUMER), ("JSON_READER", json_reader, NATIVE_READER))
        if choice == "native" and not built
    ]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)}, but the native extensions are not installed (the package was built "
            "without a Rust toolchain): use auto, or reinstall with cargo on PATH"
        )
    return WriterPath(
        native_consumer=NATIVE_CONSUMER if consumer == "auto" else consumer == "native",
        native_reader=NATIVE_READER if json_reader == "auto" else json_reader == "native",
    )


def _router(settings: Settings, contracts: ContractRegistry, path: WriterPath) -> Router:
    w = settings.writer
    return Router(
        settings.kafka.topic_prefix,
        contracts,
        w.exclude_tables,
        w.max_value_bytes,
        value_format=w.value_format,
        schema_registry_url=w.schema_registry_url,
        source=settings.kafka.source(),
        native_reader=path.native_reader,
    )


def tune_collector() -> None:
    """The loop allocates millions of short-lived objects per minute and almost no reference cycles.

    With the default thresholds the cyclic collector runs every 700 allocations and keeps re-scanning the
    modules and buffered batches that stay alive: freeze what start-up made and collect less often.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def tune_allocator(buffer_max_bytes: int) -> bool:
    """Serve Arrow's buffers from the C library's heap and keep freed memory there for the next batch.

    Every poll builds and drops tens of megabytes of columns. Arrow's bundled allocator, and glibc above its
    mmap threshold, hand such blocks back to the kernel when they are freed, so the next batch faults the
    same amount in again as fresh zeroed pages (a third of the writer's page faults). One heap that maps
    blocks of up to 32 MiB from itself and gives memory back only once a quarter of the buffer budget is
    free at its top keeps those pages in use; peak memory is unchanged. Returns False where the C library
    is not glibc: the defaults stay.
    """
    if not is_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = max(128 << 10, min(buffer_max_bytes // 4, (1 << 31) - 1))
    if not (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, trim)):
        return False
    pa.set_memory_pool(pa.system_memory_pool())
    return True
