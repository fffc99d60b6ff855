"""The partitions' checkpoint: the lake writer's commit protocol, in its numbered steps.

1. Write each partition's buffered rows to the lake: the files are durable when the write returns.
2. Wait until the DLQ has acknowledged every record of the partition sent to it so far.
3. Commit the end offsets of every partition that got through 1 and 2, in one synchronous commit.
4. Check each partition's own result of that commit.

The partitions due at the same moment (a flush round, a revoke, the shutdown) share step 3: one request to
the group coordinator instead of one per partition, which with hundreds of partitions is most of a round.

Then, for each partition whose commit succeeded, the buffer starts over at its end and the DLQ forgets what is
below it. Where it failed, the rows are durable, so they are dropped, but the committed position stays where
it was: the next checkpoint of the partition (its age makes one due soon) commits again, with or without new
rows.

Nothing is ever committed past a record that is not in a file or acknowledged by the DLQ: a transient
failure of step 1 or 2 leaves that partition out of step 3, with its buffer's positions as they were, and
returns the error for it; the caller seeks back to the committed position and pauses the partition, so the
records are read and written again. The others go on.

The checkpoint is typed against the few calls it makes (:class:`Committer`, :class:`DlqAcks`), so its
invariants are unit-tested without a broker (``tests/unit/test_checkpoint.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from services.common.errors import TransientError
from services.common.kafka import KafkaException, TopicPartition
from services.common.kafka.batch_consumer import CommitResult
from services.common.logging import get_logger
from services.consumer.buffers import PartitionBuffer
from services.consumer.sink import WrittenFile

__all__ = ["TP", "Checkpoint", "CheckpointOutcome", "Committer", "DlqAcks", "Outcomes", "WriteRows"]

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
    rows: int | None  # how many rows are now in the lake (None: there were none to write)
    committed: bool
    write_s: float  # step 1: writing the partition's files
    commit_s: float  # step 3: the commit this partition shared with the others of its round


Outcomes = dict[TP, CheckpointOutcome | TransientError]
"""Per partition: what its checkpoint did, or the transient error of step 1 or 2 that kept it from step 3."""


@dataclass(frozen=True, slots=True)
class _Durable:
    """A partition through steps 1 and 2: its files are written and its DLQ records acknowledged."""

    tp: TP
    buffer: PartitionBuffer
    written: list[WrittenFile]
    rows: int | None
    write_s: float


class Checkpoint:
    def __init__(self, committer: Committer, dlq: DlqAcks, write: WriteRows, *, dlq_timeout_s: float) -> None:
        self._committer = committer
        self._dlq = dlq
        self._write = write
        self._dlq_timeout_s = dlq_timeout_s

    def run(self, due: list[tuple[TP, PartitionBuffer]]) -> Outcomes:
        """Steps 1 to 4 for every buffer of ``due`` (see the module doc); each partition's outcome."""
        outcomes: Outcomes = {}
        durable: list[_Durable] = []
        for tp, buffer in due:
            try:
                durable.append(self._make_durable(tp, buffer))
            except TransientError as exc:
                outcomes[tp] = exc
        committed, commit_s = self._commit_all(durable)
        for done in durable:
            outcomes[done.tp] = CheckpointOutcome(done.written, done.rows, done.tp in committed, done.write_s, commit_s)
        return outcomes

    def settle(self, tp: TP, buffer: PartitionBuffer) -> tuple[bool, float]:
        """Steps 2 to 4, for a buffer whose rows the caller has written itself: whether ``end`` is committed,
        and how long the commit took. A transient error of step 2 is raised."""
        self._dlq.confirm(tp[0], tp[1], self._dlq_timeout_s)  # 2
        committed, commit_s = self._commit_all([_Durable(tp, buffer, [], None, 0.0)])
        return tp in committed, commit_s

    def _make_durable(self, tp: TP, buffer: PartitionBuffer) -> _Durable:
        """Steps 1 and 2. A transient error of step 1 leaves the buffer as it was; once its rows are in the lake
        the buffer lets go of them (the round's other files need the memory) and keeps its positions."""
        began = time.monotonic()
        rows = buffer.take()
        written, rows = self._write(tp, rows) if rows is not None else ([], None)  # 1
        write_s = time.monotonic() - began
        buffer.durable()
        self._dlq.confirm(tp[0], tp[1], self._dlq_timeout_s)  # 2
        return _Durable(tp, buffer, written, None if rows is None else rows.num_rows, write_s)

    def _commit_all(self, durable: list[_Durable]) -> tuple[set[TP], float]:
        """Steps 3 and 4, and what follows for each buffer; the partitions committed and the commit's time."""
        if not durable:
            return set(), 0.0
        began = time.monotonic()
        committed = self._commit({done.tp: done.buffer.end for done in durable})  # 3 and 4
        commit_s = time.monotonic() - began
        for done in durable:
            if done.tp in committed:
                self._dlq.forget_below(done.tp[0], done.tp[1], done.buffer.end)
                done.buffer.committed()
            else:
                done.buffer.durable()
        return committed, commit_s

    def _commit(self, ends: dict[TP, int]) -> set[TP]:
        """One synchronous commit of ``ends``; the partitions whose own result is a success."""
        try:
            results = self._committer.commit(
                [TopicPartition(topic, partition, end) for (topic, partition), end in ends.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # The data is durable; whoever owns the partitions next re-reads from the last commit, and the
            # loader's de-duplication absorbs what it writes again: nothing is lost or doubled.
            for (topic, partition), end in ends.items():
                log.warning("writer.commit_failed", topic=topic, partition=partition, offset=end, error=str(exc))
            return set()
        committed = set(ends)
        for result in results or []:
            if result.error is not None:
                log.warning(
                    "writer.commit_failed", topic=result.topic, partition=result.partition, error=str(result.error)
                )
                committed.discard((result.topic, result.partition))
        return committed
