"""Column names cdcflow gives to columns beside a table's own, which a source column may not take.

Every lake file, bronze table and silver model holds a table's own columns next to columns cdcflow adds, and
silver's SQL works with a few more on the way. A source column named like one of them would meet it in one
row: two ``_op`` columns in a lake file, a bronze table DuckDB or BigQuery refuses to create (both match names
without regard to case, so ``_OP`` is the same name), or a silver model whose SQL reads the wrong one. The
catalog refuses such a column by name (:func:`is_reserved`), with the remedy: exclude it from capture.

Silver's history names its period ``valid_from``, ``valid_to`` and ``is_current``, names real tables have:
a table with a column of one of those names keeps it, and its history takes :data:`SHADOWED_PERIOD` instead
(:func:`history_period`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from services.common.contracts.arrow import LAKE_METADATA

__all__ = [
    "HISTORY_PERIOD",
    "LAKE_FOLDER_NAMES",
    "LOADER_METADATA_NAMES",
    "RESERVED_NAMES",
    "SHADOWED_PERIOD",
    "SILVER_WORKING_NAMES",
    "history_period",
    "is_reserved",
    "warehouse_reserved",
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
    *("_recency", "_key_loaded_at", "_next_lsn", "_next_ts", "_truncate_lsn", "_truncated_at"),
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


def warehouse_reserved(backend: str) -> tuple[str, ...]:
    """The names a warehouse backend reserves besides :data:`RESERVED_NAMES`."""
    return LAKE_FOLDER_NAMES if backend == "bigquery" else ()


def why_reserved(name: str, also: Collection[str] = ()) -> str | None:
    """Why a source column named ``name`` would meet a column cdcflow adds, or one of ``also`` (names the
    warehouse reserves), without regard to case; None when it would not."""
    lowered = name.lower()
    if lowered in RESERVED_NAMES:
        return (
            "cdcflow adds a column of that name (without regard to case) beside a table's own in the lake, bronze "
            "or silver"
        )
    if lowered in {reserved.lower() for reserved in also}:
        return (
            "the warehouse's loads read the lake's folders as columns of that name (without regard to case), so "
            "the table's rows could not be loaded"
        )
    return None


def is_reserved(name: str, also: Collection[str] = ()) -> bool:
    """Whether :func:`why_reserved` has a reason for ``name``."""
    return why_reserved(name, also) is not None


def history_period(columns: Iterable[str]) -> tuple[str, str, str]:
    """The names of the period columns of the history of a table with ``columns``."""
    taken = {name.lower() for name in columns}
    return SHADOWED_PERIOD if taken & set(HISTORY_PERIOD) else HISTORY_PERIOD
