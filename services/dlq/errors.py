"""Errors of the DLQ tool."""

from services.common.errors import TerminalError, TransientError

__all__ = [
    "DlqNotFoundError",
    "DlqToolError",
    "KafkaFailedError",
    "PlanMismatchError",
    "RecordNotFoundError",
    "ReplayFencedError",
]


class DlqToolError(TerminalError):
    """The DLQ tool cannot do what was asked."""


class DlqNotFoundError(DlqToolError):
    """The group has no DLQ topic (nothing was ever dead-lettered, or the group name is wrong)."""


class RecordNotFoundError(DlqToolError):
    """No DLQ record at the coordinates asked for."""


class PlanMismatchError(DlqToolError):
    """``--execute <plan id>``: the selection resolves to another plan now (the DLQ or the replay progress
    changed since the dry run, or the filters differ). Nothing was replayed."""


class ReplayFencedError(TransientError):
    """Another replay of the same group started (same transactional id) and fenced this one; what this one
    committed stays committed, its open transaction was aborted."""


class KafkaFailedError(TransientError):
    """Kafka refused a request or did not answer in time. A replay stopped this way committed whole batches
    only; running the same ``--execute`` again goes on where it stopped."""
