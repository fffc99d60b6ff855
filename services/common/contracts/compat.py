"""Contract evolution: what may change between versions without breaking the lake and bronze."""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.common.contracts.model import Column, TableContract

__all__ = ["Change", "compare", "evolve"]


@dataclass(frozen=True, slots=True)
class Change:
    table: str
    column: str
    kind: str  # added | dropped | restored | removed (a key column) | type_changed | key_changed | added_not_null
    detail: str
    compatible: bool

    def __str__(self) -> str:
        verdict = "ok" if self.compatible else "INCOMPATIBLE"
        return f"{verdict}: {self.table}.{self.column} {self.kind} ({self.detail})"


def _shape(column: Column) -> tuple[object, ...]:
    items = _shape(column.items) if column.items else None
    return (column.semantic, column.precision, column.scale, items)


def compare(old: TableContract, new: TableContract) -> list[Change]:
    """Every difference from ``old`` to ``new`` (a stored version, or the live catalog's contract, which has no
    dropped columns). Compatible: an added nullable column, a dropped non-key column (kept, see
    :class:`TableContract`), a dropped column captured again with its earlier type."""
    name = old.qualified_name
    changes: list[Change] = []
    before = {c.name: c for c in old.live_columns}
    now = {c.name: c for c in new.live_columns}
    for column in old.columns:
        found = now.get(column.name)
        if column.name in before and found is None:
            key = column.name in old.primary_key
            detail = column.pg_type if key else f"{column.pg_type}: kept, NULL in versions after the drop"
            changes.append(Change(name, column.name, "removed" if key else "dropped", detail, compatible=not key))
        elif found is not None and _shape(found) != _shape(column):
            detail = f"{column.pg_type} → {found.pg_type}"
            changes.append(Change(name, column.name, "type_changed", detail, compatible=False))
        elif found is not None and column.name not in before:
            changes.append(Change(name, column.name, "restored", found.pg_type, compatible=True))
    known = {c.name for c in old.columns}
    for column in new.live_columns:
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
    """``new`` as the next version of ``old`` (same version when nothing changed). A column of ``old`` that
    ``new`` lacks stays, nullable and listed as dropped, so no version of a table ever loses a column."""
    live = {c.name: c for c in new.live_columns}
    # nullable once dropped: the versions written while it was gone hold NULL
    kept = [
        live[c.name] if c.name in live and c.name not in old.dropped else replace(live.get(c.name, c), nullable=True)
        for c in old.columns
    ]
    known = {c.name for c in old.columns}
    columns = (*kept, *(c for c in new.live_columns if c.name not in known))
    dropped = tuple(c.name for c in columns if c.name not in live)
    merged = replace(new, columns=columns, dropped=dropped)
    if not compare(old, merged) and (old.columns, old.dropped) == (merged.columns, merged.dropped):
        return replace(merged, version=old.version)
    return replace(merged, version=old.version + 1)
