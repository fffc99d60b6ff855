"""What a buffered table holds in memory beyond its values, beside the writer's estimate of it.

A writer of many partitions buffers many small tables: a poll over 200 tables gives each partition a few dozen
rows. Arrow's ``Table.nbytes`` counts a table's values; the table also holds, per column, the C++ objects that
own its buffers and the allocator's alignment and bookkeeping of each, whatever its rows. The writer's budget
counts that as ``COLUMN_OVERHEAD`` bytes per column (services/consumer/buffers.py).

This decodes real change events of ``lending.transactions`` (bench/events.py: from the stack's topic, made by
the workload when it holds too few) with the writer's decoder and the writer's allocator settings, in batches
of ``--rows`` events, and keeps each batch's rows as the writer buffers them (a table in buffers of its own),
``--tables`` of them. Each distinct batch is decoded once first and dropped, so what one decoding uses for
itself is in place before the count starts; the growth of the resident set while the tables are kept, less
their ``nbytes``, is what they hold beyond their values. Prints one JSON line.

    .venv/bin/python -m bench.buffer_bench [--tables 4000] [--rows 25]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.decode_bench import _batches
from bench.events import SOURCE_TOPIC, sample_events
from services.common.contracts.store import load_contracts
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.kafka.message_columns import MessageBatch
from services.common.settings import load_settings
from services.consumer.buffers import COLUMN_OVERHEAD
from services.consumer.wiring import tune_allocator
from services.stack.runtime import Stack, require_healthy

__all__ = ["buffer_figures"]

_INGESTED_AT_US = 1_800_000_000_000_000


def buffer_figures(tables: int, rows: int, columns: int, values_bytes: int, rss_growth_bytes: int) -> dict[str, Any]:
    """What ``tables`` kept tables of ``rows`` rows and ``columns`` columns held beyond their values, per table
    and per column, against the writer's per-column estimate."""
    overhead = rss_growth_bytes - values_bytes
    per_column = overhead / (tables * columns)
    return {
        "benchmark": "buffer",
        "tables": tables,
        "rows_per_table": rows,
        "columns": columns,
        "values_mib": round(values_bytes / (1 << 20), 1),
        "rss_growth_mib": round(rss_growth_bytes / (1 << 20), 1),
        "overhead_per_table_bytes": round(overhead / tables),
        "overhead_per_column_bytes": round(per_column),
        "estimate_per_column_bytes": COLUMN_OVERHEAD,
        "estimate_covers_it": per_column <= COLUMN_OVERHEAD,
    }


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=4_000, help="small tables kept")
    parser.add_argument("--rows", type=int, default=25, help="rows of each")
    args = parser.parse_args()
    settings = load_settings()
    require_healthy(Stack(settings))
    tune_allocator(settings.writer.buffer_max_bytes)
    values = [v for v in sample_events(settings, wanted=args.rows * 50) if v is not None]
    (contract,) = (c for c in load_contracts(settings.writer.contracts_dir) if c.qualified_name == SOURCE_TOPIC)
    topic = f"{settings.kafka.topic_prefix}.{SOURCE_TOPIC}"
    decoder = JsonEventDecoder(contract)
    full = [batch for batch in _batches(topic, values, args.rows) if len(batch) == args.rows]
    batches = list(itertools.islice(itertools.cycle(full), args.tables))

    def decoded(batch: MessageBatch) -> list[pa.Table]:
        return list(decoder.decode(topic, batch, _INGESTED_AT_US).rows_by_partition().values())

    for batch in full:  # one decoding's own memory, in place before the count; nothing kept
        decoded(batch)
    before = _rss_bytes()
    kept = [table for batch in batches for table in decoded(batch)]
    growth = _rss_bytes() - before
    if len(kept) != args.tables or any(t.num_rows != args.rows for t in kept):
        raise SystemExit(f"{len(kept)} tables kept, not {args.tables} of {args.rows} rows: not a clean sample")
    figures = buffer_figures(len(kept), args.rows, kept[0].num_columns, sum(t.nbytes for t in kept), growth)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
