"""Errors of the local stack."""

from services.common.errors import TerminalError, TransientError

__all__ = [
    "ComponentFailedError",
    "MissingPrerequisiteError",
    "SourceUnreachableError",
    "StackError",
    "StartTimeoutError",
]


class StackError(TerminalError):
    """The local stack cannot do what was asked."""


class MissingPrerequisiteError(StackError):
    """A program the stack needs is not installed; the message says how to install it."""


class ComponentFailedError(StackError):
    """A component exited or refused to start; the message points at its log."""


class SourceUnreachableError(StackError):
    """A source database is out of reach: down, refusing the connection or the credentials."""


class StartTimeoutError(TransientError):
    """A component did not become healthy in time."""
