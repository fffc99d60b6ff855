"""How much librdkafka may fetch ahead of the writer: memory held outside the buffer budget, sized from it."""

from __future__ import annotations

__all__ = ["fetch_limits"]

_PREFETCH_MAX_KB = 8 << 10  # librdkafka's prefetch queue per consumer, in KiB, at most: about a poll batch


def fetch_limits(buffer_max_bytes: int) -> dict[str, int]:
    """librdkafka's prefetch queue, one partition's share of a fetch and a whole fetch, for a writer whose
    buffers may hold ``buffer_max_bytes``.

    Beyond about a poll batch ahead, a prefetch queue only keeps decompressed data waiting (catching up, a
    queue of a quarter of the budget made the client fault in fresh pages for most of what it fetched).
    Catching up, bigger fetches per partition mean fewer requests to build, send and parse; but a retry's seek
    throws away what was fetched beyond the committed offset, so a partition's share stays a small part of
    the budget. A whole fetch is bounded like the queue it fills: with a partition's share times hundreds of
    partitions, librdkafka's own bound (50 MiB) is what a response reaches, and a queued record keeps the
    response it came in alive. A response stays far below the heap's mmap threshold too (32 MiB,
    ``wiring.tune_allocator``): one just under it is carved from the heap and stays resident once freed
    (BENCHMARKS.md, "Lake writer at scale").
    """
    return {
        "queued.max.messages.kbytes": min(_PREFETCH_MAX_KB, max(1024, buffer_max_bytes // 4096)),
        "max.partition.fetch.bytes": max(256 << 10, min(8 << 20, buffer_max_bytes // 256)),
        "fetch.max.bytes": max(1 << 20, min(_PREFETCH_MAX_KB << 10, buffer_max_bytes // 16)),
    }
