"""Step 1 of a checkpoint: a partition's rows in the lake, and no row that cannot be written holding up the
others.

A write that fails for another reason than a transient one is probed by bisection (the rows encoded to
Parquet, nothing stored); rows that cannot be written go to the DLQ (``decoder_error``, stage ``write``) with
their records read again from Kafka, the rest are written. A failure no row explains is a
:class:`WriteFailedError`, retried later like a transient one: nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from services.common.debezium.records import DecodeFailure
from services.common.errors import TransientError
from services.common.kafka import KafkaException, Message
from services.common.lake import Lake
from services.common.logging import get_logger
from services.common.settings import Settings
from services.consumer.checkpoint import TP
from services.consumer.errors import WriteFailedError
from services.consumer.faults import fail_write_if_marked
from services.consumer.guard import DiscardLake, defect_failure, describe, failing_rows, is_native_panic
from services.consumer.quarantine import read_range
from services.consumer.routing import Route, Router
from services.consumer.sink import ParquetSink, WrittenFile

__all__ = ["RowWriter"]

log = get_logger(__name__)


class RowWriter:
    """Writes a partition's rows as lake files of its table; ``dead_letter`` takes the records of rows that
    cannot be written."""

    def __init__(
        self,
        settings: Settings,
        lake: Lake,
        router: Router,
        dead_letter: Callable[[Sequence[DecodeFailure]], None],
    ) -> None:
        self._settings = settings
        self._router = router
        self._dead_letter = dead_letter
        self._sink = ParquetSink(lake, settings.kafka.topic_prefix)
        self._probe = ParquetSink(DiscardLake(), settings.kafka.topic_prefix)  # encodes, stores nothing

    def write(self, tp: TP, rows: pa.Table) -> tuple[list[WrittenFile], pa.Table]:
        """The files written and the rows they hold (``rows`` less those that went to the DLQ)."""
        route = self._router.route(tp[0])
        try:
            return _write(self._sink, route, tp[1], rows), rows
        except TransientError:
            raise
        except Exception as exc:  # a defect: some rows cannot be written
            return self._write_without_failing_rows(tp, route, rows, exc)
        except BaseException as exc:
            if not is_native_panic(exc):
                raise
            return self._write_without_failing_rows(tp, route, rows, exc)

    def write_replayed(
        self, route: Route, partition: int, rows: pa.Table, replay: tuple[int, int, int]
    ) -> list[WrittenFile]:
        """Rows of records the DLQ tool replayed, in files named for where they were read in the replay topic
        (``services/common/lake/layout.py``)."""
        return self._sink.write(route.schema, route.table, partition, rows, replay=replay)

    def _write_without_failing_rows(
        self, tp: TP, route: Route, rows: pa.Table, error: BaseException
    ) -> tuple[list[WrittenFile], pa.Table]:
        topic, partition = tp
        failing = failing_rows(lambda part: _write(self._probe, route, partition, part), rows)
        if not failing:
            raise WriteFailedError(f"writing {topic}[{partition}] failed, yet every row encodes: {describe(error)}")
        offsets = rows.column("_kafka_offset").to_numpy()
        bad = {int(offsets[index]): exc for index, exc in failing}
        log.error(
            "writer.rows_unwritable", topic=topic, partition=partition, offsets=sorted(bad)[:20], error=describe(error)
        )
        records = self._records_at(topic, partition, sorted(bad))
        self._dead_letter([defect_failure(records[offset], exc, stage="write") for offset, exc in bad.items()])
        keep = np.ones(rows.num_rows, dtype=bool)
        keep[[index for index, _ in failing]] = False
        rest = rows.filter(pa.array(keep))
        written = _write(self._sink, route, partition, rest) if rest.num_rows else []
        return written, rest

    def _records_at(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Message]:
        """The records at ``offsets`` read again from Kafka (the buffer keeps rows, not records); one no longer
        there (retention) is represented by its coordinates alone."""
        wanted = set(offsets)
        group = self._settings.writer.group_id
        try:
            read = read_range(self._settings, group, (topic, partition, offsets[0], offsets[-1]))
        except KafkaException as exc:
            raise WriteFailedError(f"reading the unwritable records of {topic}[{partition}] again: {exc}") from exc
        found = {int(m.offset() or 0): m for m in read if int(m.offset() or 0) in wanted}
        for offset in wanted - found.keys():
            found[offset] = Message(topic=topic, partition=partition, offset=offset)
        return found


def _write(sink: ParquetSink, route: Route, partition: int, rows: pa.Table) -> list[WrittenFile]:
    fail_write_if_marked(rows)
    return sink.write(route.schema, route.table, partition, rows)
