"""The lake writer's checkpoint without a broker: what may be committed, in which order, and after what.

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
from services.consumer.checkpoint import TP, Checkpoint
from services.consumer.sink import ParquetSink, WrittenFile
from tests.fixtures.lakefiles import PREFIX, lending_contract

TOPIC = f"{PREFIX}.lending.transactions"
TP0: TP = (TOPIC, 0)


class _Recorder:
    """The consumer's commit and the DLQ's acknowledgements, as the checkpoint calls them, in one log."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.commit_error: Exception | None = None
        self.partition_error: KafkaError | None = None
        self.dlq_error: Exception | None = None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> list[CommitResult]:
        assert asynchronous is False
        (tp,) = offsets
        self.calls.append(("commit", tp.offset))
        if self.commit_error is not None:
            raise self.commit_error
        return [CommitResult(tp.topic, tp.partition, tp.offset, self.partition_error)]

    def confirm(self, topic: str, partition: int, timeout_s: float) -> None:
        self.calls.append(("confirm", (topic, partition)))
        if self.dlq_error is not None:
            raise self.dlq_error

    def forget_below(self, topic: str, partition: int, offset: int) -> None:
        self.calls.append(("forget_below", offset))


class _UnreachableError(TransientError):
    pass


def _rows(offsets: range) -> pa.Table:
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
            "_kafka_partition": [0] * len(offsets),
            "_kafka_offset": list(offsets),
            "_source_ts": [1_795_000_000_000_000] * len(offsets),
            "_kafka_timestamp": [1_795_000_000_000_000] * len(offsets),
            "_ingested_at": [1_795_000_000_000_000] * len(offsets),
        },
        schema=schema,
    )


def _buffer(start: int, rows: range | None, end: int) -> PartitionBuffer:
    buffer = PartitionBuffer(TOPIC, 0, start=start, end=start)
    buffer.add(_rows(rows) if rows is not None else None, end)
    return buffer


@pytest.fixture
def lake(tmp_path: Path) -> LocalLake:
    return LocalLake(tmp_path / "lake")


def _checkpoint(lake: LocalLake, recorder: _Recorder, *, fail_write: bool = False) -> Checkpoint:
    sink = ParquetSink(lake, PREFIX)
    contract = lending_contract("transactions")

    def write(tp: TP, rows: pa.Table) -> tuple[list[WrittenFile], pa.Table]:
        if fail_write:
            raise _UnreachableError("the lake is unreachable")
        recorder.calls.append(("write", rows.num_rows))
        return sink.write(contract.schema, contract.table, tp[1], rows), rows

    return Checkpoint(recorder, recorder, write, dlq_timeout_s=1.0)


def test_files_then_the_dlq_then_the_commit_then_the_buffer_starts_over(lake: LocalLake) -> None:
    recorder = _Recorder()
    buffer = _buffer(100, range(100, 110), 112)  # 110 and 111: a DLQ'd record and a tombstone
    outcome = _checkpoint(lake, recorder).run(TP0, buffer)
    assert recorder.calls == [("write", 10), ("confirm", TP0), ("commit", 112), ("forget_below", 112)]
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
    with pytest.raises(_UnreachableError):
        _checkpoint(lake, recorder, fail_write=failure == "write").run(TP0, buffer)
    assert not [c for c in recorder.calls if c[0] in {"commit", "forget_below"}]
    assert (buffer.start, buffer.end, buffer.rows) == (100, 110, 10)


@pytest.mark.parametrize("how", ["raised", "partition error"])
def test_a_failed_commit_keeps_the_committed_position_and_commits_again_next_time(lake: LocalLake, how: str) -> None:
    recorder = _Recorder()
    if how == "raised":
        recorder.commit_error = KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    else:
        recorder.partition_error = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    checkpoint = _checkpoint(lake, recorder)
    buffer = _buffer(100, range(100, 110), 110)
    assert not checkpoint.run(TP0, buffer).committed
    # the rows are in the lake and dropped; the position stays, so the partition is still due a commit
    assert (buffer.start, buffer.end, buffer.rows, buffer.pending) == (100, 110, 0, True)
    assert ("forget_below", 110) not in recorder.calls
    recorder.commit_error, recorder.partition_error = None, None
    recorder.calls.clear()
    outcome = checkpoint.run(TP0, buffer)
    assert recorder.calls == [("confirm", TP0), ("commit", 110), ("forget_below", 110)]  # no file written again
    assert (outcome.committed, outcome.written, buffer.start) == (True, [], 110)
    assert len(list(lake.list(f"{PREFIX}/"))) == 1


def test_new_rows_after_a_failed_commit_are_committed_with_the_old_ones(lake: LocalLake) -> None:
    recorder = _Recorder()
    recorder.partition_error = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    checkpoint = _checkpoint(lake, recorder)
    buffer = _buffer(100, range(100, 110), 110)
    checkpoint.run(TP0, buffer)
    buffer.add(_rows(range(110, 115)), 115)
    recorder.partition_error = None
    recorder.calls.clear()
    assert checkpoint.run(TP0, buffer).committed
    assert recorder.calls == [("write", 5), ("confirm", TP0), ("commit", 115), ("forget_below", 115)]
    paths = sorted(f.path for f in lake.list(f"{PREFIX}/"))
    assert [(LakeLayout.parse(p).first_offset, LakeLayout.parse(p).last_offset) for p in paths] == [
        (100, 109),
        (110, 114),
    ]
