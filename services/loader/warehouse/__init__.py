"""Warehouses bronze lives in: DuckDB (the embedded default) and BigQuery, behind one Protocol."""

from services.loader.warehouse.base import LoadedFile, LoadResult, Warehouse

__all__ = ["LoadResult", "LoadedFile", "Warehouse"]
