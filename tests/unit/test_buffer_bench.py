"""The buffer benchmark's figures: what kept tables held beyond their values, against the writer's estimate."""

from __future__ import annotations

from bench.buffer_bench import buffer_figures
from services.consumer.buffers import COLUMN_OVERHEAD

MIB = 1 << 20


def test_the_overhead_is_the_growth_beyond_the_values_per_table_and_column() -> None:
    figures = buffer_figures(
        tables=1_000, rows=25, columns=20, values_bytes=6 * MIB, rss_growth_bytes=6 * MIB + 16_000_000
    )
    assert figures["overhead_per_table_bytes"] == 16_000
    assert figures["overhead_per_column_bytes"] == 800
    assert (figures["values_mib"], figures["rss_growth_mib"]) == (6.0, 21.3)


def test_the_estimate_covers_it_only_when_it_is_no_smaller() -> None:
    at = buffer_figures(10, 25, 20, values_bytes=MIB, rss_growth_bytes=MIB + 10 * 20 * COLUMN_OVERHEAD)
    over = buffer_figures(10, 25, 20, values_bytes=MIB, rss_growth_bytes=MIB + 10 * 20 * (COLUMN_OVERHEAD + 1))
    assert (at["estimate_covers_it"], over["estimate_covers_it"]) == (True, False)
