"""Additive schema evolution at run time: a new column in the events becomes a new contract version.

The column's type comes from PostgreSQL's catalog (JSON events without an embedded schema do not carry
it). Only additions are accepted; a column PostgreSQL now declares NOT NULL is still nullable in the lake,
since earlier rows cannot have it. A column the catalog no longer has is kept in the new version, marked
dropped (see :func:`services.common.contracts.compat.evolve`). Anything else — a type change, a column the
catalog does not know — leaves the contract as it is and the records go to the DLQ.

PostgreSQL out of reach is not an answer: a lookup that cannot connect or is cut off raises
:class:`CatalogUnavailableError` (transient), so the writer pauses the partition and reads its records again
later; none goes to the DLQ because of an outage. Every connection attempt and every query is bounded by
``timeout_s``, so a lookup never holds the poll loop longer than that.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from services.common.contracts import TableContract
from services.common.contracts.catalog import columns_with_defaults, table_contract
from services.common.contracts.compat import compare, evolve
from services.common.contracts.errors import CatalogUnreachableError, ContractError
from services.common.contracts.reserved import WarehouseLimits
from services.common.contracts.store import publish_contract
from services.common.lake import Lake
from services.common.logging import get_logger
from services.common.metrics import WriterMetrics
from services.consumer.errors import CatalogUnavailableError

__all__ = ["CatalogEvolution"]

log = get_logger(__name__)

_RETRY_REFUSED_S = 60.0
_TIMEOUT_S = 5.0


_GONE = (
    "{table} is not in PostgreSQL's catalog now: dropped, or renamed, since these changes were made. A renamed "
    "table's changes arrive under its new name from the rename on, as a new table: `cdcflow backfill start "
    "<schema.new_name>` copies the rows it holds"
)


class CatalogEvolution:
    def __init__(
        self,
        dsn: str,
        lake: Lake,
        metrics: WriterMetrics,
        *,
        exclude_columns: Sequence[str] = (),
        warehouse: WarehouseLimits | None = None,
        timeout_s: float = _TIMEOUT_S,
        source: str = "",
    ) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._exclude_columns = list(exclude_columns)
        self._warehouse = warehouse  # the column names the warehouse refuses
        self._lake = lake
        self._metrics = metrics
        self._source = source  # the source whose database ``dsn`` reaches: its contracts carry it
        self._refused_until: dict[str, float] = {}
        self._refusals: dict[str, str] = {}  # why the catalog gave no contract for a table, while remembered

    def _lookup(self, table: str) -> TableContract | None:
        """The table's contract from the catalog; a refusal is remembered for a while (this runs per batch).

        Raises :class:`CatalogUnavailableError` when PostgreSQL cannot answer (nothing is remembered then)."""
        if time.monotonic() < self._refused_until.get(table, 0.0):
            return None
        try:
            found = table_contract(
                self._dsn,
                table,
                exclude_columns=self._exclude_columns,
                warehouse=self._warehouse,
                timeout_s=self._timeout_s,
            )
        except CatalogUnreachableError as exc:
            log.warning("writer.catalog_unavailable", table=table, error=str(exc)[:300])
            raise CatalogUnavailableError(f"looking up {table}: {exc}") from exc
        except ContractError as exc:
            log.warning("writer.catalog_lookup_failed", table=table, error=str(exc))
            self._refusals[table] = str(exc).strip()
            found = None
        else:
            self._refusals.pop(table, None)
            if found is None:  # changes made before a DROP or a RENAME, read after it
                self._refusals[table] = _GONE.format(table=table)
        if found is None:
            self._refused_until[table] = time.monotonic() + _RETRY_REFUSED_S
            return None
        return replace(found, source=self._source)

    def refusal(self, schema: str, table: str) -> str | None:
        """Why the catalog gave no contract for ``schema.table`` at its last lookup (no usable key, a column of
        a type the connector changes, no such table), or None."""
        return self._refusals.get(f"{schema}.{table}")

    def discover(self, schema: str, table: str) -> TableContract | None:
        """Contract v1 of a table that started streaming before anyone generated its contract (raises
        :class:`CatalogUnavailableError` when the catalog is out of reach)."""
        contract = self._lookup(f"{schema}.{table}")
        if contract is None:
            return None
        path = publish_contract(self._lake, contract)
        self._metrics.schema_changes.labels(contract.qualified_name, "discovered").inc()
        log.info("writer.contract_discovered", table=contract.qualified_name, contract=path)
        return contract

    def evolve(self, contract: TableContract, unknown: set[str]) -> TableContract | None:
        """The next contract version holding ``unknown``, or None when that is not an additive change (raises
        :class:`CatalogUnavailableError` when the catalog is out of reach)."""
        table = contract.qualified_name
        live = self._lookup(table)
        if live is None:
            log.warning("writer.evolution_refused", table=table, columns=sorted(unknown), why="table not in catalog")
            return None
        known = {c.name for c in contract.columns}
        relaxed = replace(
            live, columns=tuple(c if c.name in known else replace(c, nullable=True) for c in live.columns)
        )
        changes = compare(contract, relaxed)
        missing = unknown - {c.name for c in relaxed.columns}
        breaking = [str(c) for c in changes if not c.compatible]
        if missing or breaking:
            self._refused_until[table] = time.monotonic() + _RETRY_REFUSED_S
            self._metrics.schema_changes.labels(table, "refused").inc()
            why = f"columns unknown to the catalog: {sorted(missing)}" if missing else "; ".join(breaking)
            log.warning("writer.evolution_refused", table=table, columns=sorted(unknown), why=why)
            return None
        evolved = evolve(contract, relaxed)
        path = publish_contract(self._lake, evolved)
        by_kind = {kind: [c.column for c in changes if c.kind == kind] for kind in ("added", "dropped", "restored")}
        for kind, columns in by_kind.items():
            if columns:
                self._metrics.schema_changes.labels(table, kind).inc(len(columns))
        log.info("writer.contract_evolved", table=table, version=evolved.version, **by_kind, contract=path)
        self._advise_backfill(table, by_kind["added"])
        return evolved

    def _advise_backfill(self, table: str, added: list[str]) -> None:
        """Warn when PostgreSQL filled added columns of existing rows (a default) without change events, which
        only a backfill carries over. (A renamed column looks like a dropped and an added one: the catalog
        cannot tell it, so the README says it instead.)"""
        if not added:
            return
        try:
            filled = columns_with_defaults(self._dsn, table, added, timeout_s=self._timeout_s)
        except (CatalogUnreachableError, ContractError) as exc:  # advice only: the contract is published
            log.warning("writer.catalog_lookup_failed", table=table, error=str(exc)[:300])
            return
        if filled:
            command = f"cdcflow backfill start {table}" + (" --source <its connector>" if self._source else "")
            log.warning(
                "writer.backfill_advised",
                table=table,
                columns=filled,
                why="PostgreSQL gave the table's existing rows these columns' defaults without change events: "
                "silver holds NULL there until the rows are read again",
                command=command,
            )
