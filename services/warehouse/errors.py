"""Errors of the warehouses, as the loader and the transform see them."""

from services.common.errors import TerminalError, TransientError

__all__ = [
    "BronzeSchemaError",
    "CorruptFileError",
    "EarlierTypeError",
    "FileAheadOfContractError",
    "LoadOutOfMemoryError",
    "WarehouseBusyError",
    "WarehouseError",
]


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


class EarlierTypeError(BronzeSchemaError):
    """A file written under an earlier contract version holds a column that does not fit the type the contract
    gives it now: the type changed in a way bronze cannot take. Not the file's fault: it stays, and its table
    stops until the change is undone or the table is rebuilt."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


class CorruptFileError(TerminalError):
    """A lake file cannot be read as Parquet of its table; it moves to the failed prefix."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class LoadOutOfMemoryError(TransientError):
    """Reading a batch's files ran out of memory: the files are sound, the table waits for the next cycle."""

    def __init__(self, path: str, error: str) -> None:
        super().__init__(
            f"{path}: reading it ran out of memory ({error}); the table waits. Give the loader more memory, or "
            "load smaller batches (CDCFLOW_LOADER__MAX_BATCH_BYTES, CDCFLOW_LOADER__MAX_BATCH_FILES)"
        )
        self.path = path


class FileAheadOfContractError(TransientError):
    """A lake file was written under a newer contract version than the newest this loader knows: read with
    the older one, the columns that version added would be dropped. Its table waits until the version is
    known (published to the lake, or in the loader's ``schemas/``)."""

    def __init__(self, path: str, written: int, known: int) -> None:
        super().__init__(
            f"{path}: written under contract version {written}, newer than the newest known here ({known}): the "
            "table waits until that version is published, or in this loader's schemas/"
        )
        self.path = path
