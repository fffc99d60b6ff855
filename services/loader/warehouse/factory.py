"""Build the configured warehouse; heavy drivers are imported only for the backend chosen."""

from __future__ import annotations

from services.common.errors import ConfigError
from services.common.settings import Settings
from services.loader.warehouse.base import Warehouse

__all__ = ["open_warehouse"]


def open_warehouse(settings: Settings) -> Warehouse:
    if settings.warehouse.backend == "duckdb":
        from services.loader.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(settings.duckdb_path())
    raise ConfigError("the bigquery warehouse backend is not part of this build yet; use duckdb")
