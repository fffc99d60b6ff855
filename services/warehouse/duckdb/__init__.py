"""Bronze in a DuckDB file: the embedded default."""

from services.warehouse.duckdb.types import duckdb_type
from services.warehouse.duckdb.warehouse import DuckDBWarehouse

__all__ = ["DuckDBWarehouse", "duckdb_type"]
