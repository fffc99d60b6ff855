"""The lake writer's throughput in events per CPU-second, beside two baselines from the same run.

All three consume the same events from the real local broker, each with its own consumer group:

- ``writer``: the real lake writer (``python -m services.consumer``) as a child process, on its native path.
  Its CPU time (user + system, every thread) is read from /proc between its ``writer.started`` log line
  (imports and wiring done) and the moment its group has committed the end of every partition;
- ``writer_confluent``: the same writer on its confluent path (``CDCFLOW_WRITER__CONSUMER=confluent`` and
  ``CDCFLOW_WRITER__JSON_READER=arrow``: confluent_kafka's consumer and Arrow's JSON reader, what an install
  without cargo runs);
- ``writer_confluent_native``: confluent_kafka's consumer with the native JSON reader, what a writer that needs
  confluent_kafka's consumer (OAUTHBEARER, GSSAPI) runs where the native extensions are built.
- ``naive``: poll one message, ``json.loads``, a Python dict row, a pandas DataFrame to Parquet every
  10,000 rows, commit.
- ``ceiling``: consume in batches and push the raw values through ``pyarrow.json`` into Parquet with no
  per-record Python (no types from a contract, no validation, no DLQ).

The events are real Debezium JSON change events of ``lending.transactions`` (taken from the local
stack's topic, or from a short workload first), produced into a topic under a prefix of its own, which is
deleted at the end. Prints one JSON line.

    .venv/bin/python -m bench.writer_bench [--events 200000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]  # the naive baseline only
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from bench.events import (
    SOURCE_TOPIC,
    committed_all,
    cpu_seconds,
    delete_topics,
    end_offsets,
    produce_events,
    sample_events,
    started_writer,
)
from services.common.kafka import consumer
from services.common.settings import KafkaSettings, Settings, load_settings

# A writer path: its consumer and its JSON reader (CDCFLOW_WRITER__CONSUMER, CDCFLOW_WRITER__JSON_READER).
PATHS = {
    "native": ("native", "native"),
    "confluent": ("confluent", "arrow"),  # an install without cargo
    "confluent-native": ("confluent", "native"),
}


def run_writer(
    settings: Settings, prefix: str, ends: dict[tuple[str, int], int], lake: Path, *, path: str = "native"
) -> float:
    """CPU seconds of the lake writer (``path``: one of :data:`PATHS`) over the topics under ``prefix``, from
    its ``writer.started`` log line until its group has committed ``ends``; its lake is ``lake/<path>``."""
    group = f"bench-writer-{uuid.uuid4().hex[:6]}"
    lake = lake / path
    lake.mkdir()
    consumer_choice, reader_choice = PATHS[path]
    env = {
        "CDCFLOW_WRITER__CONSUMER": consumer_choice,
        "CDCFLOW_WRITER__JSON_READER": reader_choice,
        "CDCFLOW_KAFKA__TOPIC_PREFIX": prefix,
        "CDCFLOW_WRITER__GROUP_ID": group,
        "CDCFLOW_LAKE__ROOT": str(lake),
    }
    with started_writer(env, lake / "writer.log") as proc:
        began = cpu_seconds(proc.pid)
        while not committed_all(settings.kafka, group, ends):
            time.sleep(0.2)
        return cpu_seconds(proc.pid) - began


def _naive(kafka: KafkaSettings, topic: str, total: int, out_dir: Path) -> None:
    reader = consumer(kafka, f"bench-naive-{uuid.uuid4().hex[:6]}")
    reader.subscribe([topic])
    rows: list[dict[str, object]] = []
    seen, files = 0, 0
    while seen < total:
        message = reader.poll(1.0)
        if message is None or message.error() is not None:
            continue
        seen += 1
        event = json.loads(message.value() or b"null")
        if event is None:
            continue
        row = dict(event.get("after") or event.get("before") or {})
        row.update(_op=event["op"], _source_lsn=event["source"]["lsn"], _kafka_offset=message.offset())
        rows.append(row)
        if len(rows) >= 10_000 or seen == total:
            pd.DataFrame(rows).to_parquet(out_dir / f"naive-{files}.parquet")
            files += 1
            rows = []
            reader.commit(offsets=reader.position(reader.assignment()), asynchronous=False)
    reader.close()


def _ceiling(kafka: KafkaSettings, topic: str, total: int, out_dir: Path) -> None:
    reader = consumer(kafka, f"bench-ceiling-{uuid.uuid4().hex[:6]}")
    reader.subscribe([topic])
    values: list[bytes] = []
    seen, files = 0, 0
    while seen < total:
        batch = [m.value() for m in reader.consume(20_000, timeout=1.0) if m.error() is None]
        seen += len(batch)
        values += [v for v in batch if v is not None]
        if len(values) >= 100_000 or (seen >= total and values):
            table = pj.read_json(pa.BufferReader(b"\n".join(values)))
            pq.write_table(table, out_dir / f"ceiling-{files}.parquet", compression="zstd")
            files += 1
            values = []
            reader.commit(offsets=reader.position(reader.assignment()), asynchronous=False)
    reader.close()


def _baseline(role: str, topic: str, total: int, out_dir: Path) -> float:
    """A baseline in a child process of its own, so it pays its own imports outside the measurement."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.writer_bench", "--role", role, "--topic", topic, "--events", str(total),
         "--out", str(out_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def _child(role: str, topic: str, total: int, out_dir: Path) -> None:
    kafka = load_settings().kafka
    began = time.process_time()
    (_naive if role == "naive" else _ceiling)(kafka, topic, total, out_dir)
    print(time.process_time() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--role", choices=["naive", "ceiling"])
    parser.add_argument("--topic")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.role:
        _child(args.role, args.topic, args.events, args.out)
        return
    settings = load_settings()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.{SOURCE_TOPIC}"
    samples = sample_events(settings)
    produce_events(settings.kafka, topic, samples, args.events)
    ends = end_offsets(settings.kafka, topic)
    try:
        with tempfile.TemporaryDirectory(prefix="cdcflow-writer-bench-") as folder:
            base = Path(folder)
            writer_cpu = run_writer(settings, prefix, ends, base)
            confluent_cpu = run_writer(settings, prefix, ends, base, path="confluent")
            confluent_native_cpu = run_writer(settings, prefix, ends, base, path="confluent-native")
            naive_cpu = _baseline("naive", topic, args.events, base)
            ceiling_cpu = _baseline("ceiling", topic, args.events, base)
    finally:
        delete_topics(settings.kafka, [topic])
    print(
        json.dumps(
            {
                "events": args.events,
                "avg_event_bytes": round(sum(map(len, samples)) / len(samples)),
                "writer_events_per_cpu_s": round(args.events / writer_cpu),
                "writer_confluent_events_per_cpu_s": round(args.events / confluent_cpu),
                "writer_confluent_native_events_per_cpu_s": round(args.events / confluent_native_cpu),
                "naive_events_per_cpu_s": round(args.events / naive_cpu),
                "ceiling_events_per_cpu_s": round(args.events / ceiling_cpu),
            }
        )
    )


if __name__ == "__main__":
    main()
