"""The size of the writer's next poll: the configured batch, bounded by a share of the buffer budget."""

from __future__ import annotations

import pytest

from services.consumer.buffers import POLL_SHARE_OF_BUDGET, PollSize

MIB = 1 << 20


def test_the_first_poll_asks_for_the_configured_batch() -> None:
    assert PollSize.within(20_000, 64 * MIB).next() == 20_000


def test_large_records_shrink_the_poll_to_its_share_of_the_budget() -> None:
    size = PollSize.within(20_000, 64 * MIB)
    size.saw(20_000, 20_000 * 1_250)
    assert size.next() == (64 * MIB // POLL_SHARE_OF_BUDGET) // 1_250
    assert size.next() * 1_250 <= 64 * MIB // POLL_SHARE_OF_BUDGET


def test_small_records_or_a_large_budget_keep_the_configured_batch() -> None:
    small = PollSize.within(20_000, 64 * MIB)
    small.saw(5_000, 5_000 * 100)
    large = PollSize.within(10_000, 512 * MIB)
    large.saw(10_000, 10_000 * 1_250)
    assert (small.next(), large.next()) == (20_000, 10_000)


@pytest.mark.parametrize(("records", "value_bytes"), [(0, 0), (3, 0)])
def test_an_empty_poll_or_one_of_tombstones_never_stops_polling(records: int, value_bytes: int) -> None:
    size = PollSize.within(20_000, 1 * MIB)
    size.saw(10, 10 * 8 * MIB)  # one record bigger than the share: still one at a time
    assert size.next() == 1
    size.saw(records, value_bytes)
    assert size.next() >= 1


def test_the_size_follows_the_last_poll() -> None:
    size = PollSize.within(20_000, 64 * MIB)
    size.saw(1_000, 1_000 * 40_000)
    shrunk = size.next()
    size.saw(1_000, 1_000 * 500)
    assert (shrunk, size.next()) == (104, 8_388)
