"""Tables a source's connector should capture but whose changes never reach Kafka.

Debezium's filtered publication lists the tables it found when it was made. A table created later in a
captured schema, or a captured table dropped and created again (as some migrations do), is not in it, so
PostgreSQL sends none of its changes and nothing fails: only this count, per connector, says so. The names
are logged when they change (``monitor.tables_not_published``), and ``cdcflow verify`` lists them too.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from services.common.logging import get_logger
from services.common.metrics import MonitorMetrics
from services.stack.sources import Source, unpublished_tables

__all__ = ["PublicationProbe", "report_unpublished"]

log = get_logger(__name__)


def report_unpublished(
    metrics: MonitorMetrics, found: dict[str, list[str]], previous: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Set each connector's count of ``found`` tables and log their names when they change; drop the series of
    connectors that are gone. Returns what was reported."""
    for connector, tables in found.items():
        metrics.unpublished_tables.labels(connector).set(len(tables))
        if tables and tables != previous.get(connector, []):
            fix = f"cdcflow source add-table <table> --source {connector}"
            log.warning("monitor.tables_not_published", connector=connector, tables=tables, fix=fix)
        elif previous.get(connector) and not tables:
            log.info("monitor.tables_published", connector=connector)
    for gone in set(previous) - set(found):
        metrics.unpublished_tables.remove(gone)
    return found


class PublicationProbe:
    """Every source of ``sources()`` (one per connector file): its tables missing from its publication."""

    name = "publications"

    def __init__(
        self,
        sources: Callable[[], list[Source]],
        metrics: MonitorMetrics,
        *,
        exclude: Collection[str],
        timeout_s: float,
    ) -> None:
        self._sources = sources
        self._metrics = metrics
        self._exclude = exclude
        self._timeout_s = timeout_s
        self._reported: dict[str, list[str]] = {}

    def close(self) -> None:
        """A connection per source and poll, closed at once."""

    def poll(self) -> None:
        found = {
            source.connector: unpublished_tables(
                source.dsn(), source.config, exclude=self._exclude, timeout_s=self._timeout_s
            )
            for source in self._sources()
        }
        self._reported = report_unpublished(self._metrics, found, self._reported)
