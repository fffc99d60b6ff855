"""Where bronze lives, for the loader and the transform: DuckDB (the embedded default) and BigQuery side by
side (``duckdb/``, ``bigquery/``), behind one Protocol; what both share in :mod:`services.warehouse.bronze`."""

from services.warehouse.base import LoadedFile, LoadResult, Warehouse
from services.warehouse.bronze import LoadBatch, bronze_table
from services.warehouse.errors import BronzeSchemaError, CorruptFileError, WarehouseBusyError, WarehouseError

__all__ = [
    "BronzeSchemaError",
    "CorruptFileError",
    "LoadBatch",
    "LoadResult",
    "LoadedFile",
    "Warehouse",
    "WarehouseBusyError",
    "WarehouseError",
    "bronze_table",
]
