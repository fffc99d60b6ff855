"""Files of replayed records: named by their original coordinates plus where the replay topic held them."""

from __future__ import annotations

import datetime

import pytest

from services.common.lake import LakeLayout
from services.common.lake.layout import NotALakeFileError
from services.warehouse.bigquery import file_slot

DAY = datetime.date(2026, 12, 2)


def _path(first: int, last: int, replay: tuple[int, int, int] | None) -> str:
    return LakeLayout.path_for(
        "cdcflow",
        "lending",
        "transactions",
        dt=DAY,
        hour=9,
        partition=2,
        first_offset=first,
        last_offset=last,
        replay=replay,
    )


def test_a_replayed_file_never_has_a_source_file_name() -> None:
    source = _path(5, 9, None)
    replayed = _path(5, 9, (2, 40, 44))
    assert replayed != source
    assert replayed == (
        f"cdcflow/lending.transactions/dt=2026-12-02/hour=09/p2-{5:020d}-{9:020d}-r2-{40:020d}-{44:020d}.parquet"
    )
    assert _path(5, 9, (2, 40, 45)) != replayed  # another cut of the replay topic: another name
    assert _path(5, 9, (3, 40, 44)) != replayed


def test_a_replayed_file_parses_with_its_original_and_replay_coordinates() -> None:
    slot = LakeLayout.parse(_path(5, 9, (2, 40, 44)))
    assert (slot.schema, slot.table, slot.partition, slot.first_offset, slot.last_offset) == (
        "lending",
        "transactions",
        2,
        5,
        9,
    )
    assert slot.replay == (2, 40, 44)
    assert slot.holds(7)
    assert LakeLayout.parse(_path(5, 9, None)).replay is None
    assert file_slot(_path(5, 9, (2, 40, 44))).replay == (2, 40, 44)  # the BigQuery backend reads it too


@pytest.mark.parametrize("replay", [(-1, 0, 0), (0, 5, 4), (0, -1, 3)])
def test_replay_coordinates_out_of_range_are_refused(replay: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="replay coordinates"):
        _path(5, 9, replay)


def test_a_malformed_replay_suffix_is_not_a_lake_file() -> None:
    good = _path(5, 9, (2, 40, 44))
    with pytest.raises(NotALakeFileError):
        LakeLayout.parse(good.replace("-r2-", "-x2-"))
    with pytest.raises(NotALakeFileError):
        LakeLayout.parse(good.replace(f"-{44:020d}", f"-{39:020d}"))  # replay last before first
