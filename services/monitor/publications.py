"""Tables of a source's connector that are not captured, or that capturing breaks.

Debezium's filtered publication lists the tables it found when it was made. A table created later in a
captured schema, or a captured table dropped and created again (as some migrations do), is not in it, so
PostgreSQL sends none of its changes and nothing fails: only a count, per connector, says so (``cdcflow
verify`` lists them too).

The other way round, Debezium publishes every table its lists take whenever the connector starts, and some
tables must not be published as they are: an UNLOGGED one cannot be, so the publication fails to update and the
connector captures nothing of its whole source; one without a replica identity (no primary key and ``REPLICA
IDENTITY DEFAULT``, or ``NOTHING``) can, and then PostgreSQL refuses its UPDATE and DELETE, so the application
writing it fails. Both counts log the tables' names when they change.

And a type anywhere in the source database can stop the connector at its task's next start: Debezium fails on an
enum with no label and on a domain over an enum (:func:`~services.common.contracts.catalog.unloadable_types`),
counted per connector and named in the log when they change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from prometheus_client import Gauge

from services.common.contracts.catalog import HAZARD_KINDS, HazardKind, unloadable_types
from services.common.logging import get_logger
from services.common.metrics import MonitorMetrics
from services.stack.sources import Source, reading_source_tables, unpublishable_tables, unpublished_tables

__all__ = ["PublicationProbe", "report_unloadable_types", "report_unpublishable", "report_unpublished"]

log = get_logger(__name__)

Found = dict[str, list[str]]
"""The tables found per connector."""


def report_unpublished(metrics: MonitorMetrics, found: Found, previous: Found) -> Found:
    """Set each connector's count of ``found`` tables and log their names when they change; drop the series of
    connectors that are gone. Returns what was reported."""
    return _report_names(
        metrics.unpublished_tables,
        found,
        previous,
        events=("monitor.tables_not_published", "monitor.tables_published", "tables"),
        fix=lambda connector: f"cdcflow source add-table <table> --source {connector}",
    )


def _report_names(
    gauge: Gauge, found: Found, previous: Found, *, events: tuple[str, str, str], fix: Callable[[str], str]
) -> Found:
    """Set ``gauge`` per connector to how many names it has in ``found``; log them (``events``: the event when
    they change, the event when they are gone, the key naming them) with ``fix``; drop gone connectors' series."""
    changed, cleared, key = events
    for connector, names in found.items():
        gauge.labels(connector).set(len(names))
        if names and names != previous.get(connector, []):
            log.warning(changed, connector=connector, **{key: names}, fix=fix(connector))
        elif previous.get(connector) and not names:
            log.info(cleared, connector=connector)
    for gone in set(previous) - set(found):
        gauge.remove(gone)
    return found


def report_unpublishable(
    metrics: MonitorMetrics, found: Mapping[str, Mapping[str, HazardKind]], previous: Found
) -> Found:
    """Set each connector's count of tables that must not be published as they are, per reason (``found`` maps a
    connector to each such table's reason), and log their names when they change; drop the series of connectors
    that are gone. Returns the tables reported per connector."""
    for connector, tables in found.items():
        for reason in HAZARD_KINDS:
            count = sum(1 for why in tables.values() if why == reason)
            metrics.unpublishable_tables.labels(connector, reason).set(count)
        names = sorted(tables)
        if names and names != previous.get(connector, []):
            log.warning(
                "monitor.tables_unpublishable",
                connector=connector,
                tables=dict(sorted(tables.items())),
                fix="docs/runbook.md#cdcflowtableunpublishable",
            )
        elif previous.get(connector) and not names:
            log.info("monitor.tables_publishable", connector=connector)
    for gone in set(previous) - set(found):
        for reason in HAZARD_KINDS:
            metrics.unpublishable_tables.remove(gone, reason)
    return {connector: sorted(tables) for connector, tables in found.items()}


def report_unloadable_types(metrics: MonitorMetrics, found: Found, previous: Found) -> Found:
    """Set each connector's count of types Debezium fails on (``found``: their names, per connector) and log the
    names when they change; drop the series of connectors that are gone. Returns what was reported."""
    return _report_names(
        metrics.unloadable_types,
        found,
        previous,
        events=("monitor.types_unloadable", "monitor.types_loadable", "types"),
        fix=lambda _: "docs/runbook.md#cdcflowsourcetypeunloadable",
    )


class PublicationProbe:
    """Every source of ``sources()`` (one per connector file): its tables missing from its publication, and
    those that must not be published as they are."""

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
        self._unpublishable: Found = {}
        self._unloadable: Found = {}

    def close(self) -> None:
        """A connection per source and poll, closed at once."""

    def poll(self) -> None:
        unpublished, unpublishable, unloadable = {}, {}, {}
        for source in self._sources():
            dsn, config = source.dsn(), source.config
            unpublished[source.connector] = unpublished_tables(
                dsn, config, exclude=self._exclude, timeout_s=self._timeout_s
            )
            hazards = unpublishable_tables(dsn, config, timeout_s=self._timeout_s)
            unpublishable[source.connector] = {t: h.kind for t, h in hazards.items() if t not in self._exclude}
            with reading_source_tables():
                unloadable[source.connector] = sorted(unloadable_types(dsn, timeout_s=self._timeout_s))
        self._unpublished = report_unpublished(self._metrics, unpublished, self._unpublished)
        self._unpublishable = report_unpublishable(self._metrics, unpublishable, self._unpublishable)
        self._unloadable = report_unloadable_types(self._metrics, unloadable, self._unloadable)
