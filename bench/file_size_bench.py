"""The lake writer's write step: CPU per event as a lake file's rows shrink.

A lake file holds one partition's rows of one table and hour (DESIGN.md, "Lake"), so the rows a file gets are
the changes of one table's partition between two flushes: a table's whole share of a capture over many
tables, a few seconds' changes of a trickle. What a file costs whatever it holds (Parquet's writer, its
metadata and a column chunk per column; a new file in the lake, its fsyncs and rename) is then paid per few
hundred rows instead of per tens of thousands. This measures it in process, on real change events of
``lending.transactions`` (bench/events.py: from the local stack's topic, made by the workload when it holds
too few): the events decoded once by the writer's decoder, repeated to ``--rows`` rows a pass, and written by
the writer's sink (``services/consumer/sink.py``) in files of each size, as one partition's consecutive
offsets. Every row is given one event hour, so a file is one slice, never split by hour. A pass writes into a
table folder that already exists (a writer's table folder usually does); each pass into a fresh temporary
lake on the filesystem of ``tempfile``. The same pass with a lake that stores nothing gives the encoding's
share. CPU time of the process, the median of ``--repeats`` passes.

The largest file is the same-run baseline: each size's per-event cost against it, and the cost a file adds
whatever its rows (the extra CPU per event times the rows of a file). Prints one JSON line.

    .venv/bin/python -m bench.file_size_bench [--sizes 35000,5000,1000,175] [--rows 210000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.decode_bench import _batches
from bench.events import SOURCE_TOPIC, sample_events
from services.common.contracts.store import load_contracts
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.lake import Lake
from services.common.lake.local import LocalLake
from services.common.settings import load_settings
from services.consumer.guard import DiscardLake
from services.consumer.sink import ParquetSink
from services.stack.runtime import Stack, require_healthy

__all__ = ["file_size_figures", "pass_rows", "write_pass"]

_INGESTED_AT_US = 1_800_000_000_000_000
_EVENT_TIME_US = 1_800_000_000_000_000  # every row's event hour: one file per slice
_PREFIX = "bench"


def pass_rows(rows: pa.Table, count: int) -> pa.Table:
    """``count`` rows: ``rows`` repeated, as consecutive offsets of one partition, all of one event hour."""
    if rows.num_rows == 0:
        raise SystemExit("no decoded rows to write")
    repeats = -(-count // rows.num_rows)
    tiled = pa.concat_tables([rows] * repeats).slice(0, count).combine_chunks()
    offsets = tiled.schema.get_field_index("_kafka_offset")
    tiled = tiled.set_column(offsets, tiled.schema.field(offsets), pa.array(range(count), pa.int64()))
    source_ts = tiled.schema.get_field_index("_source_ts")
    field = tiled.schema.field(source_ts)
    return tiled.set_column(source_ts, field, pa.array([_EVENT_TIME_US] * count, pa.int64()).cast(field.type))


def write_pass(lake: Lake, rows: pa.Table, size: int) -> tuple[float, int]:
    """CPU seconds to write ``rows`` as files of ``size`` rows, and the files written. The table's folder is
    made first, outside the measurement."""
    sink = ParquetSink(lake, _PREFIX)
    schema, table = SOURCE_TOPIC.split(".")
    sink.write(schema, table, 1, rows.slice(0, 1))
    began = time.process_time()
    files = sum(len(sink.write(schema, table, 0, rows.slice(a, size))) for a in range(0, rows.num_rows, size))
    return time.process_time() - began, files


def file_size_figures(rows: int, cpu_s: dict[int, float], encode_cpu_s: dict[int, float]) -> dict[str, Any]:
    """Per file size (the largest first, the baseline): CPU per event and per file, the encoding's share, the
    per-event cost against the baseline's and what a file adds whatever its rows."""
    sizes = sorted(cpu_s, reverse=True)
    base_us = 1e6 * cpu_s[sizes[0]] / rows
    figures = []
    for size in sizes:
        per_event_us = 1e6 * cpu_s[size] / rows
        held = min(size, rows)
        figures.append(
            {
                "rows_per_file": held,
                "files_per_pass": -(-rows // size),
                "cpu_us_per_event": round(per_event_us, 2),
                "encode_us_per_event": round(1e6 * encode_cpu_s[size] / rows, 2),
                "cpu_ms_per_file": round(per_event_us * held / 1e3, 3),
                "added_ms_per_file": round((per_event_us - base_us) * held / 1e3, 3),
                "vs_baseline": round(per_event_us / base_us, 2),
            }
        )
    return {
        "benchmark": "file_size",
        "rows_per_pass": rows,
        "baseline_rows_per_file": figures[0]["rows_per_file"],
        "sizes": figures,
    }


def _median_cpu_s(make_lake: Callable[[Path], Lake], rows: pa.Table, size: int, repeats: int) -> float:
    spent = []
    for _ in range(repeats + 1):  # the first pass warms what the rest reuse
        with tempfile.TemporaryDirectory(prefix="cdcflow-file-size-") as folder:
            lake = make_lake(Path(folder))
            spent.append(write_pass(lake, rows, size)[0])
            lake.close()
    return statistics.median(spent[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="35000,5000,1000,175", help="rows a file, comma-separated")
    parser.add_argument("--rows", type=int, default=210_000, help="rows a pass writes")
    parser.add_argument("--repeats", type=int, default=5, help="passes per size; the median counts")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")}, reverse=True)
    settings = load_settings()
    require_healthy(Stack(settings))
    values = [v for v in sample_events(settings, wanted=4_000) if v is not None]
    (contract,) = (c for c in load_contracts(settings.writer.contracts_dir) if c.qualified_name == SOURCE_TOPIC)
    topic = f"{settings.kafka.topic_prefix}.{SOURCE_TOPIC}"
    (batch,) = _batches(topic, values, len(values))
    decoded = JsonEventDecoder(contract).decode(topic, batch, _INGESTED_AT_US)
    rows = pass_rows(decoded.rows, args.rows)
    repeats = max(1, args.repeats)
    cpu_s = {size: _median_cpu_s(LocalLake, rows, size, repeats) for size in sizes}
    encode_cpu_s = {size: _median_cpu_s(lambda _: DiscardLake(), rows, size, repeats) for size in sizes}
    print(json.dumps(file_size_figures(rows.num_rows, cpu_s, encode_cpu_s)))


if __name__ == "__main__":
    main()
