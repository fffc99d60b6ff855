"""A value the contract cannot hold because PostgreSQL changed the column's type is a schema mismatch.

Without an embedded schema, a Debezium JSON event carries only values: a column whose type changed in
PostgreSQL (``numeric(7,4)`` to ``numeric(9,6)``, ``integer`` to ``text``) shows up as values the contract's
type refuses — a scale or precision it cannot hold, a string where it expects a number. Read alone, such a
record looks like bad data (``wrong_type``, ``decimal_overflow``, ``out_of_range``). When the table's
catalog entry disagrees with its contract on a column's type, those failures are re-labelled
``schema_mismatch`` and name the change, so an operator can update the contract and replay exactly them
(``cdcflow dlq replay --reason schema_mismatch``). A type change never becomes a contract version at run
time: it needs a person to decide (README, "Schema changes").

The catalog is asked only when a batch has such failures, at most once per table every ``ttl_s``. An
unreachable catalog leaves the failures as they are (a warning says so): the records are in the DLQ either
way, and a decode must not wait on PostgreSQL for a label.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from services.common.contracts import TableContract
from services.common.contracts.catalog import table_contract
from services.common.contracts.compat import compare
from services.common.contracts.errors import CatalogUnreachableError, ContractError
from services.common.debezium.records import DecodeFailure, Reason
from services.common.logging import get_logger

__all__ = ["VALUE_REASONS", "TypeChangeCheck", "relabel"]

log = get_logger(__name__)

VALUE_REASONS = frozenset({Reason.WRONG_TYPE, Reason.DECIMAL_OVERFLOW, Reason.OUT_OF_RANGE})
"""Failures a type change produces: a value of the new type read as the old one."""

_TTL_S = 60.0


class TypeChangeCheck:
    def __init__(
        self, dsn: str, *, exclude_columns: Sequence[str] = (), timeout_s: float = 5.0, ttl_s: float = _TTL_S
    ) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._exclude_columns = list(exclude_columns)
        self._ttl_s = ttl_s
        self._known: dict[tuple[str, int], tuple[float, dict[str, str]]] = {}

    def relabel(self, contract: TableContract, failures: list[DecodeFailure]) -> list[DecodeFailure]:
        """``failures`` with those a type change explains re-labelled ``schema_mismatch``."""
        if not any(f.reason in VALUE_REASONS for f in failures):
            return failures
        return relabel(contract, failures, self.changed_columns(contract))

    def changed_columns(self, contract: TableContract) -> dict[str, str]:
        """Each column whose type PostgreSQL now declares differently, with ``old → new`` (cached)."""
        key = (contract.qualified_name, contract.version)
        now = time.monotonic()
        cached = self._known.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        changed = self._look_up(contract)
        self._known[key] = (now + self._ttl_s, changed)
        if changed:
            log.warning(
                "writer.type_changed",
                table=contract.qualified_name,
                contract_version=contract.version,
                columns=changed,
                fix="update the contract (cdcflow schemas generate), restart the writer, replay the DLQ",
            )
        return changed

    def _look_up(self, contract: TableContract) -> dict[str, str]:
        table = contract.qualified_name
        try:
            found = table_contract(self._dsn, table, exclude_columns=self._exclude_columns, timeout_s=self._timeout_s)
        except CatalogUnreachableError as exc:
            log.warning("writer.type_check_unavailable", table=table, error=str(exc)[:300])
            return {}
        except ContractError as exc:
            log.warning("writer.type_check_failed", table=table, error=str(exc).strip()[:300])
            return {}
        if found is None:
            return {}
        return {c.column: c.detail for c in compare(contract, found) if c.kind == "type_changed"}


def relabel(contract: TableContract, failures: list[DecodeFailure], changed: dict[str, str]) -> list[DecodeFailure]:
    """``failures`` with the value failures ``changed`` (column → ``old → new``) explains as schema mismatches:
    those of a changed column, and those that name no column (Arrow's reader does not always say which). A
    value another column holds out of range stays what it is."""
    if not changed:
        return failures
    return [_relabelled(contract, f, changed) if _explained(f, changed) else f for f in failures]


def _explained(failure: DecodeFailure, changed: dict[str, str]) -> bool:
    return failure.reason in VALUE_REASONS and (failure.column is None or failure.column in changed)


def _relabelled(contract: TableContract, failure: DecodeFailure, changed: dict[str, str]) -> DecodeFailure:
    columns = [failure.column] if failure.column in changed else sorted(changed)
    change = "; ".join(f"{name}: {changed[name]}" for name in columns)
    detail = (
        f"{contract.qualified_name} changed type in PostgreSQL ({change}), contract v{contract.version}"
        f" has the old type: {failure.detail}"
    )
    # no column: a schema mismatch naming one is an additive-evolution candidate, and this one is the contract's
    return replace(failure, reason=Reason.SCHEMA_MISMATCH, detail=detail, error_class="TypeChanged", column=None)
