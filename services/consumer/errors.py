"""Errors of the lake writer."""

from services.common.errors import TerminalError, TransientError

__all__ = [
    "CatalogUnavailableError",
    "CommitFailedError",
    "DlqDeliveryError",
    "DlqRecordTooLargeError",
    "OffsetsOutOfRangeError",
    "StartUncheckedError",
    "WriteFailedError",
]


class DlqDeliveryError(TransientError):
    """A DLQ record was not acknowledged; its source offset must not be committed."""


class DlqRecordTooLargeError(DlqDeliveryError):
    """A DLQ record does not fit the DLQ topic even with its value left out (its key or headers are too
    large): the partition stays paused and retried, loudly, rather than skip the record."""


class CatalogUnavailableError(TransientError):
    """PostgreSQL's catalog could not be read (unreachable, restarting, timed out): the records that needed it
    are read again later, never dead-lettered."""


class WriteFailedError(TransientError):
    """A partition's rows failed to be written and no single row explains it: retried later, nothing skipped."""


class OffsetsOutOfRangeError(TerminalError):
    """The group's committed offset of a partition is no longer in the log (retention deleted records the group
    never wrote, or the topic was recreated): the writer stops instead of skipping them. ``lost`` holds
    ``(topic, partition, committed, log_start, log_end)`` of each such partition."""

    def __init__(self, lost: list[tuple[str, int, int, int, int]]) -> None:
        self.lost = lost
        where = ", ".join(f"{t}[{p}] committed {c}, log {lo}..{hi}" for t, p, c, lo, hi in lost)
        super().__init__(f"committed offsets outside the log: {where}")


class StartUncheckedError(TransientError):
    """Where the committed offsets of ``partitions`` stand against their logs could not be read yet: their
    records wait (paused, read again) rather than be written past a gap nobody checked for."""

    def __init__(self, partitions: list[tuple[str, int]], error: str) -> None:
        self.partitions = partitions
        where = ", ".join(f"{topic}[{partition}]" for topic, partition in partitions)
        super().__init__(f"the start check of {where} failed again: {error}")


class CommitFailedError(TerminalError):
    """The group coordinator refused a commit (e.g. the partition moved to another member)."""
