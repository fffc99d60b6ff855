"""librdkafka's fetching ahead, sized from the writer's buffer budget."""

from __future__ import annotations

import pytest

from services.consumer.prefetch import fetch_limits

MIB = 1 << 20


@pytest.mark.parametrize("budget_mib", [1, 16, 64, 256, 512, 4096, 65536])
def test_a_fetch_holds_a_partitions_share_and_no_more_than_the_queue_it_fills(budget_mib: int) -> None:
    limits = fetch_limits(budget_mib * MIB)
    assert limits["max.partition.fetch.bytes"] <= limits["fetch.max.bytes"]
    assert limits["fetch.max.bytes"] <= max(MIB, limits["queued.max.messages.kbytes"] << 10)
    assert limits["fetch.max.bytes"] >= MIB  # a record of up to librdkafka's message.max.bytes still fits
    assert 1024 <= limits["queued.max.messages.kbytes"] <= 8 * 1024


def test_with_a_small_budget_a_whole_fetch_is_a_sixteenth_of_it() -> None:
    # 1,200 partitions at 256 KiB each would fill librdkafka's own 50 MiB, most of a 64 MiB budget again
    limits = fetch_limits(64 * MIB)
    assert limits["fetch.max.bytes"] == 4 * MIB
    assert limits["max.partition.fetch.bytes"] == 256 << 10
    assert limits["queued.max.messages.kbytes"] == 8 * 1024


def test_a_large_budget_fetches_up_to_the_prefetch_queue_far_below_the_heaps_mmap_threshold() -> None:
    # a 32 MiB response (a sixteenth of 512 MiB) is carved from the heap and stays resident: 180 MiB more at peak
    limits = fetch_limits(512 * MIB)
    assert limits["fetch.max.bytes"] == 8 * MIB
    assert limits["max.partition.fetch.bytes"] == 2 * MIB
    assert fetch_limits(65536 * MIB)["fetch.max.bytes"] == 8 * MIB
