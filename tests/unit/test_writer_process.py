"""Process-wide settings the writer makes at start-up, each checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import gc, json, sys
import pyarrow as pa
from services.consumer.wiring import tune_allocator, tune_collector
before = pa.default_memory_pool().backend_name
tuned = tune_allocator(int(sys.argv[1]))
tune_collector()
table = pa.table({"n": list(range(100_000))})  # allocated after the switch: from the new pool
print(json.dumps({"before": before, "tuned": tuned, "after": pa.default_memory_pool().backend_name,
                  "in_pool": pa.default_memory_pool().bytes_allocated() >= table.nbytes,
                  "threshold": gc.get_threshold()[0]}))
"""


def _probe(buffer_max_bytes: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(buffer_max_bytes)], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("buffer_max_bytes", [1 << 20, 512 << 20, 64 << 30])
def test_arrow_allocates_from_the_tuned_c_heap(buffer_max_bytes: int) -> None:
    result = _probe(buffer_max_bytes)
    assert result["before"] != "system"  # the bundled allocator by default …
    assert result["tuned"] is True
    assert result["after"] == "system"  # … and the C library's heap once tuned
    assert result["in_pool"] is True
    assert result["threshold"] == 50_000
