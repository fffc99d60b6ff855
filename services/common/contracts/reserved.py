"""Column names cdcflow gives to columns beside a table's own, which a source column may not take.

Every lake file, bronze table and silver model holds a table's own columns next to columns cdcflow adds, and
silver's SQL works with a few more on the way. A source column named like one of them would meet it in one
row: two ``_op`` columns in a lake file, a bronze table DuckDB or BigQuery refuses to create (both match names
without regard to case, so ``_OP`` is the same name), or a silver model whose SQL reads the wrong one. The
catalog refuses such a column by name (:func:`is_reserved`), with the remedy: exclude it from capture.

A warehouse may refuse more (:class:`WarehouseLimits`): BigQuery's loads read the lake's folders as columns,
it keeps some prefixes for columns of its own and refuses ``$`` in a column name; and its widest exact decimal
holds fewer digits after the point than the lake's.

Silver's history names its period ``valid_from``, ``valid_to`` and ``is_current``, names real tables have:
a table with a column of one of those names keeps it, and its history takes :data:`SHADOWED_PERIOD` instead
(:func:`history_period`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.common.contracts.arrow import LAKE_METADATA

__all__ = [
    "BIGQUERY_LIMITS",
    "HISTORY_PERIOD",
    "LAKE_FOLDER_NAMES",
    "LOADER_METADATA_NAMES",
    "RESERVED_NAMES",
    "SHADOWED_PERIOD",
    "SILVER_WORKING_NAMES",
    "WarehouseLimits",
    "history_period",
    "is_reserved",
    "names_alike",
    "warehouse_limits",
    "why_reserved",
]

LOADER_METADATA_NAMES = ("_loaded_at", "_load_id", "_lake_file")
"""The columns the loader adds in bronze (services.warehouse.bronze.LOADER_COLUMNS)."""

HISTORY_PERIOD = ("valid_from", "valid_to", "is_current")
"""A silver history's period columns: the version's commit, the next version's, and whether it is current."""

SHADOWED_PERIOD = ("_valid_from", "_valid_to", "_is_current")
"""The period's names in the history of a table that has a column named like :data:`HISTORY_PERIOD`."""

SILVER_WORKING_NAMES = (
    *("_lsn_in_partition", "_lsn_elsewhere", "_moved", "_order_lsn", "_order_read", "_order_moved_at"),
    *("_recency", "_key_loaded_at", "_next_lsn", "_next_source_lsn", "_next_ts", "_truncate_lsn", "_truncated_at"),
    *("_moved_in", "_moved_to_topic", "_moved_to_partition", "_moved_to_offset", "_moved_from_partition"),
    *("_moved_from_offset", "_moved_at_lsn", "_moved_life"),
)
"""Columns silver's SQL (dbt/macros/silver.sql) adds to a table's own on the way to its models."""

RESERVED_NAMES: frozenset[str] = frozenset(
    {
        *(field.name for field in LAKE_METADATA),
        *LOADER_METADATA_NAMES,
        *SHADOWED_PERIOD,
        *SILVER_WORKING_NAMES,
    }
)
"""Every name of a column cdcflow adds, in lower case."""

LAKE_FOLDER_NAMES = ("dt", "hour")
"""The lake's folder levels (services.common.lake.layout): BigQuery's loads read them as columns of these names."""


@dataclass(frozen=True, slots=True)
class WarehouseLimits:
    """What a warehouse refuses besides :data:`RESERVED_NAMES`: column names (without regard to case), and
    decimals it holds no exact type for."""

    warehouse: str = ""
    folders: tuple[str, ...] = ()  # the lake's folder levels, which its loads read as columns
    prefixes: tuple[str, ...] = ()  # kept for columns of its own
    characters: str = ""  # no column name of its may hold one
    widest_decimal: tuple[int, int] | None = None  # its widest exact decimal's digits before and after the point

    def why_unfit_decimal(self, precision: int, scale: int) -> str | None:
        """Why the warehouse holds no exact type for a decimal(``precision``, ``scale``); None when it does."""
        if self.widest_decimal is None:
            return None
        before, after = self.widest_decimal
        if scale <= after and precision - scale <= before:
            return None
        return (
            f"has more digits {'after' if scale > after else 'before'} the point than {self.warehouse}'s widest "
            f"exact decimal ({before} before the point and {after} after), so the table's rows could not be loaded"
        )

    def why_refused(self, name: str) -> str | None:
        """Why the warehouse would refuse a column named ``name``; None when it would not."""
        lowered = name.lower()
        if lowered in self.folders:
            return (
                f"{self.warehouse}'s loads read the lake's folders as columns of that name (without regard to case), "
                "so the table's rows could not be loaded"
            )
        if prefix := next((p for p in self.prefixes if lowered.startswith(p.lower())), None):
            return (
                f"{self.warehouse} keeps column names starting with {prefix} (without regard to case) for its own, "
                "so the table's rows could not be loaded"
            )
        if held := sorted({c for c in name if c in self.characters}):
            return (
                f"a {self.warehouse} column name cannot hold {' or '.join(repr(c) for c in held)}, so the table's "
                "rows could not be loaded"
            )
        return None


BIGQUERY_LIMITS = WarehouseLimits(
    "BigQuery",
    folders=LAKE_FOLDER_NAMES,
    prefixes=(
        *("_TABLE_", "_FILE_", "_PARTITION", "_ROW_TIMESTAMP", "__ROOT__", "_COLIDENTIFIER"),
        *("_CHANGE_SEQUENCE_NUMBER", "_CHANGE_TYPE", "_CHANGE_TIMESTAMP"),
    ),
    characters="$",
    widest_decimal=(38, 38),
)
"""BigQuery's column names: letters, digits and ``_`` (``$``, which PostgreSQL allows, is not among them even
in its flexible column names), not starting with its reserved prefixes; its widest exact decimal, BIGNUMERIC:
76 digits, 38 of them after the point."""


def names_alike(names: Iterable[str]) -> tuple[str, str] | None:
    """The first two of ``names`` that differ only in case, in their order; None when there are none. DuckDB and
    BigQuery match column names without regard to case, so such two would be one column there."""
    seen: dict[str, str] = {}
    for name in names:
        if (other := seen.setdefault(name.lower(), name)) != name:
            return other, name
    return None


def warehouse_limits(backend: str) -> WarehouseLimits:
    """What the warehouse backend ``backend`` refuses besides :data:`RESERVED_NAMES`."""
    return BIGQUERY_LIMITS if backend == "bigquery" else WarehouseLimits()


def why_reserved(name: str, warehouse: WarehouseLimits | None = None) -> str | None:
    """Why a source column named ``name`` would meet a column cdcflow adds, without regard to case, or would be
    refused by ``warehouse``; None when neither."""
    if name.lower() in RESERVED_NAMES:
        return (
            "cdcflow adds a column of that name (without regard to case) beside a table's own in the lake, bronze "
            "or silver"
        )
    return warehouse.why_refused(name) if warehouse else None


def is_reserved(name: str, warehouse: WarehouseLimits | None = None) -> bool:
    """Whether :func:`why_reserved` has a reason for ``name``."""
    return why_reserved(name, warehouse) is not None


def history_period(columns: Iterable[str]) -> tuple[str, str, str]:
    """The names of the period columns of the history of a table with ``columns``."""
    taken = {name.lower() for name in columns}
    return SHADOWED_PERIOD if taken & set(HISTORY_PERIOD) else HISTORY_PERIOD
