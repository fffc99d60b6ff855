"""Contract evolution: what may change between versions without breaking the lake and bronze."""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.common.contracts.model import Column, TableContract

__all__ = ["Change", "compare", "evolve"]


@dataclass(frozen=True, slots=True)
class Change:
    table: str
    column: str
    kind: str  # added | removed | type_changed | key_changed | added_not_null
    detail: str
    compatible: bool

    def __str__(self) -> str:
        verdict = "ok" if self.compatible else "INCOMPATIBLE"
        return f"{verdict}: {self.table}.{self.column} {self.kind} ({self.detail})"


def _shape(column: Column) -> tuple[object, ...]:
    items = _shape(column.items) if column.items else None
    return (column.semantic, column.precision, column.scale, items)


def compare(old: TableContract, new: TableContract) -> list[Change]:
    """Every difference from ``old`` to ``new``; only added nullable columns are compatible."""
    name = old.qualified_name
    changes: list[Change] = []
    new_columns = {c.name: c for c in new.columns}
    for column in old.columns:
        now = new_columns.get(column.name)
        if now is None:
            changes.append(Change(name, column.name, "removed", column.pg_type, compatible=False))
        elif _shape(now) != _shape(column):
            detail = f"{column.pg_type} → {now.pg_type}"
            changes.append(Change(name, column.name, "type_changed", detail, compatible=False))
    known = {c.name for c in old.columns}
    for column in new.columns:
        if column.name in known:
            continue
        if column.nullable:
            changes.append(Change(name, column.name, "added", column.pg_type, compatible=True))
        else:
            detail = f"{column.pg_type} NOT NULL: earlier rows cannot have it"
            changes.append(Change(name, column.name, "added_not_null", detail, compatible=False))
    if old.primary_key != new.primary_key:
        detail = f"{list(old.primary_key)} → {list(new.primary_key)}"
        changes.append(Change(name, "(primary key)", "key_changed", detail, compatible=False))
    return changes


def evolve(old: TableContract, new: TableContract) -> TableContract:
    """``new`` as the next version of ``old`` (same version when nothing changed)."""
    if not compare(old, new) and old.columns == new.columns:
        return replace(new, version=old.version)
    return replace(new, version=old.version + 1)
