"""A partition's checkpoint: the lake writer's commit protocol, in its numbered steps.

1. Write the partition's buffered rows to the lake: the files are durable when the write returns.
2. Wait until the DLQ has acknowledged every record of the partition sent to it so far.
3. Commit the buffer's end offset, synchronously.
4. Check the partition's own result of that commit.

Then, when the commit succeeded, the buffer starts over at its end and the DLQ forgets what is below it.
When it failed, the rows are durable, so they are dropped, but the committed position stays where it was:
the next checkpoint of the partition (its age makes one due soon) commits again, with or without new rows.

Nothing is ever committed past a record that is not in a file or acknowledged by the DLQ: a transient
failure of step 1 or 2 raises before step 3, with the buffer as it was, and the caller seeks back to the
committed position and pauses the partition.

The checkpoint is typed against the few calls it makes (:class:`Committer`, :class:`DlqAcks`), so its
invariants are unit-tested without a broker (``tests/unit/test_checkpoint.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from services.common.kafka import KafkaException, TopicPartition
from services.common.kafka.batch_consumer import CommitResult
from services.common.logging import get_logger
from services.consumer.buffers import PartitionBuffer
from services.consumer.sink import WrittenFile

__all__ = ["TP", "Checkpoint", "CheckpointOutcome", "Committer", "DlqAcks", "WriteRows"]

log = get_logger(__name__)

TP = tuple[str, int]

WriteRows = Callable[[TP, pa.Table], tuple[list[WrittenFile], pa.Table]]
"""Writes a partition's rows; returns the files and the rows they hold (rows that cannot be written at all
may have gone to the DLQ instead). Raises a transient error when nothing may be committed yet."""


class Committer(Protocol):
    """The one consumer call a checkpoint makes."""

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> list[CommitResult]: ...


class DlqAcks(Protocol):
    """What a checkpoint needs of the DLQ publisher."""

    def confirm(self, topic: str, partition: int, timeout_s: float) -> None:
        """Returns once every record of the partition sent so far is acknowledged; raises a transient error."""
        ...

    def forget_below(self, topic: str, partition: int, offset: int) -> None: ...


@dataclass(frozen=True, slots=True)
class CheckpointOutcome:
    written: list[WrittenFile]
    rows: pa.Table | None  # the rows now in the lake (None: there were none to write)
    committed: bool
    commit_s: float


class Checkpoint:
    def __init__(self, committer: Committer, dlq: DlqAcks, write: WriteRows, *, dlq_timeout_s: float) -> None:
        self._committer = committer
        self._dlq = dlq
        self._write = write
        self._dlq_timeout_s = dlq_timeout_s

    def run(self, tp: TP, buffer: PartitionBuffer) -> CheckpointOutcome:
        """Steps 1 to 4 for ``buffer`` (see the module doc); a transient error of 1 or 2 leaves it untouched."""
        rows = buffer.take()
        written, rows = self._write(tp, rows) if rows is not None else ([], None)  # 1
        committed, commit_s = self.settle(tp, buffer)
        return CheckpointOutcome(written, rows, committed, commit_s)

    def settle(self, tp: TP, buffer: PartitionBuffer) -> tuple[bool, float]:
        """Steps 2 to 4, for a buffer whose rows the caller has written itself: whether ``end`` is committed,
        and how long the commit took."""
        topic, partition = tp
        self._dlq.confirm(topic, partition, self._dlq_timeout_s)  # 2
        began = time.monotonic()
        committed = self._commit(tp, buffer.end)  # 3 and 4
        commit_s = time.monotonic() - began
        if committed:
            self._dlq.forget_below(topic, partition, buffer.end)
            buffer.committed()
        else:
            buffer.durable()
        return committed, commit_s

    def _commit(self, tp: TP, end: int) -> bool:
        try:
            results = self._committer.commit([TopicPartition(tp[0], tp[1], end)], asynchronous=False)
        except KafkaException as exc:
            # The data is durable; whoever owns the partition next re-reads from the last commit, and the
            # loader's de-duplication absorbs what it writes again: nothing is lost or doubled.
            log.warning("writer.commit_failed", topic=tp[0], partition=tp[1], offset=end, error=str(exc))
            return False
        failed = [r for r in results or [] if r.error is not None]
        for result in failed:
            log.warning("writer.commit_failed", topic=result.topic, partition=result.partition, error=str(result.error))
        return not failed
