"""Errors of the warehouses, as the loader and the transform see them."""

from services.common.errors import TerminalError, TransientError

__all__ = ["BronzeSchemaError", "CorruptFileError", "WarehouseBusyError", "WarehouseError"]


class WarehouseError(TerminalError):
    """The warehouse refused a statement for a reason a retry will not fix."""


class WarehouseBusyError(TransientError):
    """The warehouse is locked or unreachable right now (e.g. dbt holds the DuckDB file).

    ``whole_warehouse``: every table would get the same answer now (a locked DuckDB file), so the loader
    waits for its next cycle instead of trying the other tables; otherwise only this table waits.
    """

    def __init__(self, message: str, *, whole_warehouse: bool = False) -> None:
        super().__init__(message)
        self.whole_warehouse = whole_warehouse


class BronzeSchemaError(TerminalError):
    """A bronze table cannot take the contract: a column changed type or disappeared."""


class CorruptFileError(TerminalError):
    """A lake file cannot be read as Parquet of its table; it moves to the failed prefix."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
