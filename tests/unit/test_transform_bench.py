"""`make bench-transform` on a small bronze: the incremental run and the full refresh agree on silver (the
benchmark stops otherwise), with and without a backfill's read of every key."""

from __future__ import annotations

import pytest

from bench.transform_bench import run


@pytest.mark.parametrize("backfilled", [False, True])
def test_the_incremental_run_and_the_full_refresh_build_the_same_silver(backfilled: bool) -> None:
    result = run(300, 0.05, ["silver"], backfilled=backfilled)
    sizes = {"customers": 300, "facilities": 600, "transactions": 3000}
    assert result["bronze_rows"] == sum(sizes.values()) * (3 if backfilled else 2)
    assert result["changed_rows"] == sum(int(n * 0.05) for n in sizes.values())
    deleted = {t: max(1, int(n * 0.05) // 10) for t, n in sizes.items()}
    assert result["silver_rows"] == {t: n - deleted[t] for t, n in sizes.items()}
