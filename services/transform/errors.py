"""Errors of the transform and of ``cdcflow verify``."""

from services.common.errors import TerminalError, TransientError

__all__ = ["DbtInvocationError", "SilverGenerationError", "VerifyError", "WarehouseLockedError"]


class SilverGenerationError(TerminalError):
    """A contract cannot become a silver model (no primary key, a name taken twice)."""


class DbtInvocationError(TerminalError):
    """dbt itself failed (bad project, profile or arguments), as opposed to a model or test failing."""


class WarehouseLockedError(TransientError):
    """Another process holds the DuckDB file (the loader between its cycles); the next run may pass."""


class VerifyError(TerminalError):
    """``cdcflow verify`` cannot compare a table (its silver table is missing, a column cannot be read)."""
