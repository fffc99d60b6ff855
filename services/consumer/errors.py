"""Errors of the lake writer."""

from services.common.errors import TerminalError, TransientError

__all__ = ["CommitFailedError", "DlqDeliveryError"]


class DlqDeliveryError(TransientError):
    """A DLQ record was not acknowledged; its source offset must not be committed."""


class CommitFailedError(TerminalError):
    """The group coordinator refused a commit (e.g. the partition moved to another member)."""
