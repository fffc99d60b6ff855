"""Lag from outside the consumer: dating the oldest uncommitted record, and the committed-vs-end edge cases."""

from __future__ import annotations

import pytest

from services.common.kafka.offsets import Watermarks
from services.monitor.lag import PartitionLag, Sample, WatermarkHistory, partition_lag


def _history(*samples: tuple[int, float], max_samples: int = 100) -> WatermarkHistory:
    history = WatermarkHistory(max_samples)
    for offset, at in samples:
        history.observe(offset, at)
    return history


def test_a_record_is_dated_between_the_sightings_that_bracket_it() -> None:
    # the watermark went 100 → 200 between t=1000 and t=1010: record 149 made it 150, half way
    history = _history((100, 1000.0), (200, 1010.0))
    assert history.written_at(149) == pytest.approx(1005.0)
    assert history.written_at(100) == pytest.approx(1000.1)  # the first record after the sighting at 100
    assert history.written_at(199) == pytest.approx(1010.0)  # the last one that the sighting at 200 holds


def test_each_record_uses_its_own_bracket() -> None:
    history = _history((0, 0.0), (10, 10.0), (110, 20.0))
    assert history.written_at(4) == pytest.approx(5.0)  # 0 → 10 over 10 s: one record a second
    assert history.written_at(59) == pytest.approx(15.0)  # 10 → 110 over 10 s: ten a second


def test_a_plateau_keeps_its_last_sighting_so_the_next_record_is_not_dated_too_early() -> None:
    history = _history((50, 0.0), (50, 10.0), (50, 20.0), (50, 30.0), (51, 40.0))
    assert history.samples == [Sample(50, 0.0), Sample(50, 30.0), Sample(51, 40.0)]
    assert history.written_at(50) == pytest.approx(40.0)  # written between 30 and 40, not between 0 and 40


def test_offsets_outside_the_history_are_not_guessed() -> None:
    history = _history((100, 1000.0), (200, 1010.0))
    assert history.written_at(99) is None  # written before the first sighting: read from the record instead
    assert history.written_at(200) is None  # not written yet
    assert _history().written_at(0) is None


def test_the_history_is_bounded_and_its_oldest_samples_go_first() -> None:
    history = _history(*[(i * 10, float(i)) for i in range(10)], max_samples=4)
    assert [s.offset for s in history.samples] == [60, 70, 80, 90]
    assert history.written_at(55) is None
    assert history.first_seen() == 6.0


def test_a_watermark_that_goes_back_means_a_new_log_and_a_new_history() -> None:
    history = _history((500, 0.0), (600, 10.0), (3, 20.0))
    assert history.samples == [Sample(3, 20.0)]


@pytest.mark.parametrize(
    ("committed", "start", "end", "expected"),
    [
        (100, 0, 100, PartitionLag(0, None)),  # committed == end: nothing uncommitted
        (40, 0, 100, PartitionLag(60, 40)),  # the oldest uncommitted record is the committed offset
        (None, 0, 100, PartitionLag(100, 0)),  # nothing committed: the whole log, from its start
        (None, 30, 100, PartitionLag(70, 30)),  # ... which retention may have moved
        (None, 100, 100, PartitionLag(0, None)),  # nothing committed but nothing held either
        (None, 0, 0, PartitionLag(0, None)),  # an empty partition
        (10, 50, 100, PartitionLag(90, 50)),  # retention overtook the commit: 90 behind, 50 the oldest left
        (10, 100, 100, PartitionLag(90, 99)),  # ... and deleted everything: dated by the last offset written
        (120, 0, 100, PartitionLag(0, None)),  # ahead of the end (a recreated topic): no lag, never negative
    ],
)
def test_partition_lag_edges(committed: int | None, start: int, end: int, expected: PartitionLag) -> None:
    assert partition_lag(committed, Watermarks(start, end)) == expected
