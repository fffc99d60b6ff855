"""The lake writer's checkpoint without a broker: what may be committed, in which order, and after what,
for one partition and for several due at once.

The checkpoint is typed against the two calls it makes of the consumer and the DLQ publisher; here they are
recorded, and the rows go through the real Parquet sink into a real local lake.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from services.common.errors import TransientError
from services.common.kafka.batch_consumer import CommitResult
from services.common.lake import LakeLayout, LocalLake
from services.consumer.buffers import PartitionBuffer
from services.consumer.checkpoint import TP, Checkpoint, CheckpointOutcome
from services.consumer.sink import ParquetSink, WrittenFile
from tests.fixtures.lakefiles import PREFIX, lending_contract

TOPIC = f"{PREFIX}.lending.transactions"
TP0: TP = (TOPIC, 0)
TP1: TP = (TOPIC, 1)
TP2: TP = (TOPIC, 2)


class _Recorder:
    """The consumer's commit and the DLQ's acknowledgements, as the checkpoint calls them, in one log."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.commit_error: Exception | None = None
        self.partition_errors: dict[int, KafkaError] = {}  # the commit's result for these partitions
        self.dlq_error: Exception | None = None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> list[CommitResult]:
        assert asynchronous is False
        self.calls.append(("commit", [(tp.partition, tp.offset) for tp in offsets]))
        if self.commit_error is not None:
            raise self.commit_error
        return [
            CommitResult(tp.topic, tp.partition, tp.offset, self.partition_errors.get(tp.partition)) for tp in offsets
        ]

    def confirm(self, topic: str, partition: int, timeout_s: float) -> None:
        self.calls.append(("confirm", (topic, partition)))
        if self.dlq_error is not None:
            raise self.dlq_error

    def forget_below(self, topic: str, partition: int, offset: int) -> None:
        self.calls.append(("forget_below", (partition, offset)))


class _UnreachableError(TransientError):
    pass


def _rows(offsets: range, partition: int = 0) -> pa.Table:
    schema = pa.schema(
        [
            pa.field("transaction_id", pa.int64()),
            pa.field("_kafka_partition", pa.int32()),
            pa.field("_kafka_offset", pa.int64()),
            pa.field("_source_ts", pa.timestamp("us", tz="UTC")),
            pa.field("_kafka_timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("_ingested_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    return pa.table(
        {
            "transaction_id": list(offsets),
            "_kafka_partition": [partition] * len(offsets),
            "_kafka_offset": list(offsets),
            "_source_ts": [1_795_000_000_000_000] * len(offsets),
            "_kafka_timestamp": [1_795_000_000_000_000] * len(offsets),
            "_ingested_at": [1_795_000_000_000_000] * len(offsets),
        },
        schema=schema,
    )


def _buffer(start: int, rows: range | None, end: int, partition: int = 0) -> PartitionBuffer:
    buffer = PartitionBuffer(TOPIC, partition, start=start, end=start)
    buffer.add(_rows(rows, partition) if rows is not None else None, end)
    return buffer


@pytest.fixture
def lake(tmp_path: Path) -> LocalLake:
    return LocalLake(tmp_path / "lake")


def _checkpoint(lake: LocalLake, recorder: _Recorder, *, fail_write: frozenset[int] = frozenset()) -> Checkpoint:
    """Over the real sink; writing the partitions in ``fail_write`` fails as an unreachable lake would."""
    sink = ParquetSink(lake, PREFIX)
    contract = lending_contract("transactions")

    def write(tp: TP, rows: pa.Table) -> tuple[list[WrittenFile], pa.Table]:
        if tp[1] in fail_write:
            raise _UnreachableError("the lake is unreachable")
        recorder.calls.append(("write", rows.num_rows))
        return sink.write(contract.schema, contract.table, tp[1], rows), rows

    return Checkpoint(recorder, recorder, write, dlq_timeout_s=1.0)


def _one(checkpoint: Checkpoint, buffer: PartitionBuffer) -> CheckpointOutcome:
    """The checkpoint of partition 0 alone, which must get through steps 1 and 2."""
    outcome = checkpoint.run([(TP0, buffer)])[TP0]
    assert isinstance(outcome, CheckpointOutcome), outcome
    return outcome


def test_files_then_the_dlq_then_the_commit_then_the_buffer_starts_over(lake: LocalLake) -> None:
    recorder = _Recorder()
    buffer = _buffer(100, range(100, 110), 112)  # 110 and 111: a DLQ'd record and a tombstone
    outcome = _one(_checkpoint(lake, recorder), buffer)
    assert recorder.calls == [("write", 10), ("confirm", TP0), ("commit", [(0, 112)]), ("forget_below", (0, 112))]
    assert outcome.committed
    (file,) = outcome.written
    slot = LakeLayout.parse(file.file.path)
    assert (slot.first_offset, slot.last_offset) == (100, 109)
    assert (buffer.start, buffer.end, buffer.rows, buffer.pending) == (112, 112, 0, False)


@pytest.mark.parametrize("failure", ["write", "dlq"])
def test_a_transient_failure_before_the_commit_commits_nothing_and_leaves_the_buffer(
    lake: LocalLake, failure: str
) -> None:
    recorder = _Recorder()
    if failure == "dlq":
        recorder.dlq_error = _UnreachableError("a DLQ record is not acknowledged")
    buffer = _buffer(100, range(100, 110), 110)
    failing = frozenset({0} if failure == "write" else ())
    outcomes = _checkpoint(lake, recorder, fail_write=failing).run([(TP0, buffer)])
    assert isinstance(outcomes[TP0], _UnreachableError)
    assert not [c for c in recorder.calls if c[0] in {"commit", "forget_below"}]
    # the positions stay for the seek back; rows already in the lake are let go (they will be read again)
    assert (buffer.start, buffer.end, buffer.rows) == (100, 110, 10 if failure == "write" else 0)


@pytest.mark.parametrize("how", ["raised", "partition error"])
def test_a_failed_commit_keeps_the_committed_position_and_commits_again_next_time(lake: LocalLake, how: str) -> None:
    recorder = _Recorder()
    if how == "raised":
        recorder.commit_error = KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    else:
        recorder.partition_errors = {0: KafkaError(KafkaError.REBALANCE_IN_PROGRESS)}
    checkpoint = _checkpoint(lake, recorder)
    buffer = _buffer(100, range(100, 110), 110)
    assert not _one(checkpoint, buffer).committed
    # the rows are in the lake and dropped; the position stays, so the partition is still due a commit
    assert (buffer.start, buffer.end, buffer.rows, buffer.pending) == (100, 110, 0, True)
    assert ("forget_below", (0, 110)) not in recorder.calls
    recorder.commit_error, recorder.partition_errors = None, {}
    recorder.calls.clear()
    outcome = _one(checkpoint, buffer)
    # no file written again
    assert recorder.calls == [("confirm", TP0), ("commit", [(0, 110)]), ("forget_below", (0, 110))]
    assert (outcome.committed, outcome.written, buffer.start) == (True, [], 110)
    assert len(list(lake.list(f"{PREFIX}/"))) == 1


def test_new_rows_after_a_failed_commit_are_committed_with_the_old_ones(lake: LocalLake) -> None:
    recorder = _Recorder()
    recorder.partition_errors = {0: KafkaError(KafkaError.REBALANCE_IN_PROGRESS)}
    checkpoint = _checkpoint(lake, recorder)
    buffer = _buffer(100, range(100, 110), 110)
    _one(checkpoint, buffer)
    buffer.add(_rows(range(110, 115)), 115)
    recorder.partition_errors = {}
    recorder.calls.clear()
    assert _one(checkpoint, buffer).committed
    assert recorder.calls == [("write", 5), ("confirm", TP0), ("commit", [(0, 115)]), ("forget_below", (0, 115))]
    paths = sorted(f.path for f in lake.list(f"{PREFIX}/"))
    assert [(LakeLayout.parse(p).first_offset, LakeLayout.parse(p).last_offset) for p in paths] == [
        (100, 109),
        (110, 114),
    ]


def _three(start: int = 100) -> dict[TP, PartitionBuffer]:
    return {tp: _buffer(start, range(start, start + 10), start + 10, tp[1]) for tp in (TP0, TP1, TP2)}


def test_partitions_due_together_share_one_commit_after_all_their_files(lake: LocalLake) -> None:
    recorder = _Recorder()
    buffers = _three()
    outcomes = _checkpoint(lake, recorder).run(list(buffers.items()))
    durable = [c for p in range(3) for c in (("write", 10), ("confirm", (TOPIC, p)))]
    commit = [("commit", [(0, 110), (1, 110), (2, 110)])]
    assert recorder.calls == [*durable, *commit, *[("forget_below", (p, 110)) for p in range(3)]]
    assert all(isinstance(o, CheckpointOutcome) and o.committed and len(o.written) == 1 for o in outcomes.values())
    assert {b.start for b in buffers.values()} == {110}
    assert sorted(LakeLayout.parse(f.path).partition for f in lake.list(f"{PREFIX}/")) == [0, 1, 2]


def test_a_partition_that_fails_before_the_commit_is_left_out_of_it_and_the_others_commit(lake: LocalLake) -> None:
    recorder = _Recorder()
    buffers = _three()
    outcomes = _checkpoint(lake, recorder, fail_write=frozenset({1})).run(list(buffers.items()))
    assert isinstance(outcomes[TP1], _UnreachableError)
    assert [c for c in recorder.calls if c[0] == "commit"] == [("commit", [(0, 110), (2, 110)])]
    assert ("confirm", TP1) not in recorder.calls
    assert (buffers[TP1].start, buffers[TP1].end, buffers[TP1].rows) == (100, 110, 10)  # as it was
    assert all(isinstance(outcomes[tp], CheckpointOutcome) and buffers[tp].start == 110 for tp in (TP0, TP2))


def test_a_partition_refused_by_the_shared_commit_stays_due_and_the_others_move_on(lake: LocalLake) -> None:
    recorder = _Recorder()
    recorder.partition_errors = {2: KafkaError(KafkaError.REBALANCE_IN_PROGRESS)}
    buffers = _three()
    outcomes = _checkpoint(lake, recorder).run(list(buffers.items()))
    committed = {tp: isinstance(o, CheckpointOutcome) and o.committed for tp, o in outcomes.items()}
    assert committed == {TP0: True, TP1: True, TP2: False}
    assert ("forget_below", (2, 110)) not in recorder.calls
    assert (buffers[TP2].start, buffers[TP2].end, buffers[TP2].rows, buffers[TP2].pending) == (100, 110, 0, True)
    assert [(b.start, b.pending) for b in (buffers[TP0], buffers[TP1])] == [(110, False), (110, False)]


def test_a_commit_that_raises_commits_none_of_the_round(lake: LocalLake) -> None:
    recorder = _Recorder()
    recorder.commit_error = KafkaException(KafkaError(KafkaError._TRANSPORT))
    buffers = _three()
    outcomes = _checkpoint(lake, recorder).run(list(buffers.items()))
    assert not any(isinstance(o, CheckpointOutcome) and o.committed for o in outcomes.values())
    assert not [c for c in recorder.calls if c[0] == "forget_below"]
    assert all((b.start, b.rows, b.pending) == (100, 0, True) for b in buffers.values())
