"""The lake's layout: the one place that builds and splits the path of a lake file.

The layout (DESIGN.md, "Lake") is
``<topic_prefix>/<schema>.<table>/dt=YYYY-MM-DD/hour=HH/p<partition>-<first_offset:020d>-<last_offset:020d>.parquet``.

A name says which records its file holds: those of one Kafka partition from ``first_offset`` to
``last_offset`` that fall into one hour. Two writers that cut a partition differently (a writer restarted
after a crash, or a zombie that lost its partitions and flushes anyway) therefore write different names, and
no file is ever replaced by one holding fewer records; the loader's de-duplication on Kafka coordinates
absorbs the overlap. A name written twice holds the same records both times.

Files named before the last offset was part of the name (``p<partition>-<first_offset:020d>.parquet``)
still parse, with ``last_offset`` unknown.

Records the DLQ tool replayed (read from the replay topic ``_cdcflow.replay.<group>``) land as rows of their
original table with their original coordinates; their files add where in the replay topic they were read:
``p<partition>-<first>-<last>-r<replay partition>-<replay first:020d>-<replay last:020d>.parquet``. The
first part names the original records (so a file is attributed like any other), the suffix keeps the name
apart from every file of the source topic and from every other cut of the replay topic.

Names come from the source database and from Kafka, so they are untrusted: every part is validated
(:mod:`services.common.lake.paths`) before it becomes a path.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from services.common.lake.errors import UnsafePathError
from services.common.lake.paths import check_name, validate_relative_path

__all__ = ["OFFSET_DIGITS", "FileSlot", "LakeLayout", "NotALakeFileError"]

OFFSET_DIGITS = 20
_MAX_OFFSET = 10**OFFSET_DIGITS - 1
_FILE = re.compile(
    r"^(?P<prefix>[^/]+)/(?P<schema>[^/.]+)\.(?P<table>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"p(?P<partition>\d+)-(?P<first>\d{20})(?:-(?P<last>\d{20}))?"
    r"(?:-r(?P<replay_partition>\d+)-(?P<replay_first>\d{20})-(?P<replay_last>\d{20}))?\.parquet$"
)


class NotALakeFileError(UnsafePathError):
    """A path that does not follow the lake's file layout."""


@dataclass(frozen=True, slots=True)
class FileSlot:
    """Where a lake file sits and which records its name says it holds."""

    path: str
    topic_prefix: str
    schema: str
    table: str
    dt: datetime.date
    hour: int
    partition: int
    first_offset: int
    last_offset: int | None  # None: a file named before names carried their last offset
    # (partition, first offset, last offset) of the replay topic records a replayed file holds; None: not one
    replay: tuple[int, int, int] | None = None

    @property
    def table_folder(self) -> str:
        """``<topic_prefix>/<schema>.<table>``: the folder of every file of this table."""
        return LakeLayout.table_folder(self.topic_prefix, self.schema, self.table)

    @property
    def qualified_table(self) -> str:
        """``<schema>.<table>``, the table's folder name."""
        return f"{self.schema}.{self.table}"

    def holds(self, offset: int) -> bool:
        """Whether the name covers ``offset`` (an unknown last offset covers everything from the first)."""
        return self.first_offset <= offset and (self.last_offset is None or offset <= self.last_offset)


class LakeLayout:
    """Builds and parses lake paths; nothing else in the code joins or splits them."""

    @staticmethod
    def table_folder(topic_prefix: str, schema: str, table: str) -> str:
        """The folder of one table's files, validated."""
        for role, value in (("topic_prefix", topic_prefix), ("schema", schema), ("table", table)):
            check_name(role, value)
        return validate_relative_path(f"{topic_prefix}/{schema}.{table}")

    @staticmethod
    def path_for(
        topic_prefix: str,
        schema: str,
        table: str,
        *,
        dt: datetime.date,
        hour: int,
        partition: int,
        first_offset: int,
        last_offset: int,
        replay: tuple[int, int, int] | None = None,
    ) -> str:
        """The path of the file holding one partition's records ``first_offset..last_offset`` of one hour.

        ``dt`` and ``hour`` come from the records (UTC), never the wall clock, so a batch reprocessed after
        a crash lands in the same folder.
        """
        folder = LakeLayout.table_folder(topic_prefix, schema, table)
        _check_numbers(dt, hour, partition, first_offset, last_offset)
        suffix = ""
        if replay is not None:
            _check_replay(replay)
            r_partition, r_first, r_last = replay
            suffix = f"-r{r_partition}-{r_first:0{OFFSET_DIGITS}d}-{r_last:0{OFFSET_DIGITS}d}"
        return validate_relative_path(
            f"{folder}/dt={dt.year:04d}-{dt.month:02d}-{dt.day:02d}/hour={hour:02d}/"
            f"p{partition}-{first_offset:0{OFFSET_DIGITS}d}-{last_offset:0{OFFSET_DIGITS}d}{suffix}.parquet"
        )

    @staticmethod
    def parse(path: str) -> FileSlot:
        """Split a lake file's path into its parts; :class:`NotALakeFileError` for anything else."""
        found = _FILE.match(path)
        if found is None:
            raise NotALakeFileError(
                f"{path!r} is not a lake file path "
                "(<prefix>/<schema>.<table>/dt=YYYY-MM-DD/hour=HH/p<partition>-<first>-<last>.parquet)"
            )
        try:
            dt = datetime.date.fromisoformat(found["dt"])
        except ValueError as exc:
            raise NotALakeFileError(f"{path!r} names no real date: {exc}") from exc
        last = found["last"]
        slot = FileSlot(
            path=path,
            topic_prefix=found["prefix"],
            schema=found["schema"],
            table=found["table"],
            dt=dt,
            hour=int(found["hour"]),
            partition=int(found["partition"]),
            first_offset=int(found["first"]),
            last_offset=None if last is None else int(last),
            replay=None
            if found["replay_partition"] is None
            else (int(found["replay_partition"]), int(found["replay_first"]), int(found["replay_last"])),
        )
        try:
            LakeLayout.table_folder(slot.topic_prefix, slot.schema, slot.table)
            _check_numbers(slot.dt, slot.hour, slot.partition, slot.first_offset, slot.last_offset)
            if slot.replay is not None:
                _check_replay(slot.replay)
        except (UnsafePathError, ValueError) as exc:
            raise NotALakeFileError(f"{path!r} is not a lake file path: {exc}") from exc
        return slot


def _check_numbers(dt: datetime.date, hour: int, partition: int, first_offset: int, last_offset: int | None) -> None:
    if isinstance(dt, datetime.datetime):
        raise TypeError("dt must be a datetime.date; convert the record's UTC timestamp with .date()")
    if not 0 <= hour <= 23:
        raise ValueError(f"hour must be within 0..23, got {hour}")
    if partition < 0:
        raise ValueError(f"partition must not be negative, got {partition}")
    if not 0 <= first_offset <= _MAX_OFFSET:
        raise ValueError(f"first_offset must be within 0..{_MAX_OFFSET}, got {first_offset}")
    if last_offset is not None and not first_offset <= last_offset <= _MAX_OFFSET:
        raise ValueError(f"last_offset must be within first_offset..{_MAX_OFFSET}, got {last_offset}")


def _check_replay(replay: tuple[int, int, int]) -> None:
    partition, first, last = replay
    if partition < 0 or not 0 <= first <= last <= _MAX_OFFSET:
        raise ValueError(f"replay coordinates must be a partition and first <= last offsets, got {replay}")
