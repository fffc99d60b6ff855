"""Errors of table contracts."""

from services.common.errors import TerminalError, TransientError

__all__ = [
    "CatalogQueryError",
    "CatalogUnreachableError",
    "ContractError",
    "IncompatibleChangeError",
    "NoPrimaryKeyError",
    "UnknownTableError",
    "UnsupportedColumnError",
]


class ContractError(TerminalError):
    """A contract file is malformed or cannot describe a column."""


class UnknownTableError(ContractError):
    """No contract exists for a table that events arrived for."""


class IncompatibleChangeError(ContractError):
    """A new contract version would break readers: only added, nullable columns are compatible."""


class NoPrimaryKeyError(ContractError):
    """Change capture needs a primary key to order versions of a row."""


class UnsupportedColumnError(ContractError):
    """A column whose type the connector cannot carry exactly: captured, it would silently change."""


class CatalogUnreachableError(TransientError):
    """PostgreSQL's catalog could not be asked (unreachable, restarting, timed out): not an answer about the table."""


class CatalogQueryError(ContractError):
    """PostgreSQL answered the catalog query with an error (a role without access, a statement refused)."""
