"""Tables of a source's connector that are not captured, or that capturing breaks.

Debezium's filtered publication lists the tables it found when it was made. A table created later in a
captured schema, or a captured table dropped and created again (as some migrations do), is not in it, so
PostgreSQL sends none of its changes and nothing fails: only a count, per connector, says so (``cdcflow
verify`` lists them too).

The other way round, a table the connector's lists take that has no replica identity (no primary key and
``REPLICA IDENTITY DEFAULT``, or ``NOTHING``): once published — and Debezium publishes every table its lists
take whenever the connector starts — PostgreSQL refuses the table's UPDATE and DELETE, so the application
writing it fails. Both counts log the tables' names when they change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from prometheus_client import Gauge

from services.common.logging import get_logger
from services.common.metrics import MonitorMetrics
from services.stack.sources import Source, unpublishable_tables, unpublished_tables

__all__ = ["PublicationProbe", "report_unpublished", "report_unwritable"]

log = get_logger(__name__)

Found = dict[str, list[str]]
"""The tables found per connector."""


def report_unpublished(metrics: MonitorMetrics, found: Found, previous: Found) -> Found:
    """Set each connector's count of tables missing from its publication and log their names when they change;
    drop the series of connectors that are gone. Returns what was reported."""
    return _report(
        metrics.unpublished_tables,
        found,
        previous,
        ("monitor.tables_not_published", "monitor.tables_published"),
        lambda connector: f"cdcflow source add-table <table> --source {connector}",
    )


def report_unwritable(metrics: MonitorMetrics, found: Found, previous: Found) -> Found:
    """As :func:`report_unpublished`, for the tables without a replica identity."""
    return _report(
        metrics.unwritable_tables,
        found,
        previous,
        ("monitor.tables_without_replica_identity", "monitor.tables_with_replica_identity"),
        lambda _connector: "ALTER TABLE <table> REPLICA IDENTITY USING INDEX <unique index> (or FULL)",
    )


def _report(gauge: Gauge, found: Found, previous: Found, events: tuple[str, str], fix: Callable[[str], str]) -> Found:
    found_event, cleared_event = events
    for connector, tables in found.items():
        gauge.labels(connector).set(len(tables))
        if tables and tables != previous.get(connector, []):
            log.warning(found_event, connector=connector, tables=tables, fix=fix(connector))
        elif previous.get(connector) and not tables:
            log.info(cleared_event, connector=connector)
    for gone in set(previous) - set(found):
        gauge.remove(gone)
    return found


class PublicationProbe:
    """Every source of ``sources()`` (one per connector file): its tables missing from its publication, and
    those without a replica identity."""

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
        self._unpublished: Found = {}
        self._unwritable: Found = {}

    def close(self) -> None:
        """A connection per source and poll, closed at once."""

    def poll(self) -> None:
        unpublished, unwritable = {}, {}
        for source in self._sources():
            dsn, config = source.dsn(), source.config
            unpublished[source.connector] = unpublished_tables(
                dsn, config, exclude=self._exclude, timeout_s=self._timeout_s
            )
            hazards = unpublishable_tables(dsn, config, timeout_s=self._timeout_s)
            unwritable[source.connector] = [t for t in hazards if t not in self._exclude]
        self._unpublished = report_unpublished(self._metrics, unpublished, self._unpublished)
        self._unwritable = report_unwritable(self._metrics, unwritable, self._unwritable)
