"""The decoder's cost per call: CPU per event as a topic's batch shrinks.

The writer decodes each topic's records of a poll in one call. A poll over many tables gives each table a
few hundred events, so what a call costs whatever its size (the native reader's set-up and the Arrow arrays
built from its buffers, the envelope's checks and conversions, a few dozen Arrow calls each) is paid per few
hundred events instead of per poll. This measures it in process, on real change events of
``lending.transactions`` (bench/events.py: from the local stack's topic, made by the workload when it holds
too few): the same events decoded by the writer's decoder (the native reader, the table's contract) in
batches of each size, CPU time of the process, the median of ``--repeats`` passes (a pass decodes the sample
over and over, 50,000 events in all).

The largest batch is the same-run baseline: each size's per-event cost against it. The cost of a call of the
smallest size bounds what a poll pays per topic it touches, whatever it holds. Every pass must decode every
event to a row (none fails), or the run stops. Prints one JSON line.

    .venv/bin/python -m bench.decode_bench [--sizes 5000,1000,300,100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from bench.events import SOURCE_TOPIC, sample_events
from services.common.contracts.store import load_contracts
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.kafka.message_columns import MessageBatch
from services.common.settings import load_settings
from services.stack.runtime import Stack, require_healthy

__all__ = ["decode_figures"]

_INGESTED_AT_US = 1_800_000_000_000_000
_EVENTS_PER_PASS = 50_000  # a pass long enough (tens of milliseconds) for the CPU clock to resolve it


def _batches(topic: str, values: list[bytes], size: int) -> list[MessageBatch]:
    messages = [
        Message(topic=topic, partition=0, offset=i, value=v, timestamp=(TIMESTAMP_CREATE_TIME, 1_800_000_000_000))
        for i, v in enumerate(values)
    ]
    return [MessageBatch.of(messages[i : i + size]) for i in range(0, len(messages), size)]


def _pass_cpu_s(decoder: JsonEventDecoder, topic: str, batches: list[MessageBatch]) -> float:
    began = time.process_time()
    results = [decoder.decode(topic, batch, _INGESTED_AT_US) for batch in batches]
    spent = time.process_time() - began
    rows = sum(r.rows.num_rows for r in results)
    failed = sum(len(r.failures) for r in results)
    events = sum(len(b) for b in batches)
    if rows != events or failed:
        raise SystemExit(f"{events} events decoded to {rows} rows and {failed} failures: not a clean sample")
    return spent


def decode_figures(events: int, cpu_s_by_size: dict[int, float], rounds: int = 1) -> dict[str, Any]:
    """Per batch size (the largest first, the baseline): CPU per event and per call, and the per-event cost
    against the baseline's. A pass decoded the ``events`` of the sample ``rounds`` times."""
    sizes = sorted(cpu_s_by_size, reverse=True)
    decoded = events * rounds
    base_us = 1e6 * cpu_s_by_size[sizes[0]] / decoded
    figures = []
    for size in sizes:
        per_event_us = 1e6 * cpu_s_by_size[size] / decoded
        batch = min(size, events)
        figures.append(
            {
                "batch": batch,
                "calls_per_pass": rounds * -(-events // size),
                "cpu_us_per_event": round(per_event_us, 2),
                "cpu_ms_per_call": round(per_event_us * batch / 1e3, 3),
                "vs_baseline": round(per_event_us / base_us, 2),
            }
        )
    return {
        "benchmark": "decode",
        "sample_events": events,
        "events_per_pass": decoded,
        "baseline_batch": min(sizes[0], events),
        "sizes": figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,1000,300,100", help="batch sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="passes per size; the median counts")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")}, reverse=True)
    settings = load_settings()
    require_healthy(Stack(settings))
    values = [v for v in sample_events(settings, wanted=max(sizes) * 2) if v is not None]
    (contract,) = (c for c in load_contracts(settings.writer.contracts_dir) if c.qualified_name == SOURCE_TOPIC)
    topic = f"{settings.kafka.topic_prefix}.{SOURCE_TOPIC}"
    decoder = JsonEventDecoder(contract)
    cpu_s = {}
    rounds = -(-_EVENTS_PER_PASS // len(values))  # a pass decodes the sample this many times over
    for size in sizes:
        batches = _batches(topic, values, size) * rounds
        _pass_cpu_s(decoder, topic, batches)  # warm: the first pass loads and compiles what the rest reuse
        cpu_s[size] = statistics.median(_pass_cpu_s(decoder, topic, batches) for _ in range(max(1, args.repeats)))
    print(json.dumps(decode_figures(len(values), cpu_s, rounds)))


if __name__ == "__main__":
    main()
