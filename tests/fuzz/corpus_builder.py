"""The seed corpus: real change events from the running stack's topics, plus events of the every-type table.

``python -m tests.fuzz --refresh-corpus`` rewrites ``corpus/``; the files are committed, so the fuzzer
itself needs no stack.
"""

from __future__ import annotations

import json
from collections import Counter

from services.common.settings import load_settings
from tests.fixtures.pipeline import partition_ends, read_partitions
from tests.fuzz.targets import CORPUS, every_type_events

__all__ = ["refresh"]

PER_TABLE = 120
TABLES = ("lending.customers", "lending.facilities", "lending.transactions")
MAX_SEED_BYTES = 6_000


def _real_events(settings_topic: str) -> list[bytes | None]:
    """Up to PER_TABLE events of the topic, every op and a few tombstones among them."""
    settings = load_settings()
    ends = partition_ends(settings, [settings_topic])
    by_op: dict[str, list[bytes | None]] = {}
    for message in read_partitions(settings, ends):
        value = message.value()
        if value is not None and len(value) > MAX_SEED_BYTES:
            continue
        op = "tombstone" if value is None else str(json.loads(value).get("op"))
        by_op.setdefault(op, []).append(value)
    chosen: list[bytes | None] = []
    while len(chosen) < PER_TABLE and any(by_op.values()):
        for values in by_op.values():  # round robin over the ops, so rare ones are in too
            if values and len(chosen) < PER_TABLE:
                chosen.append(values.pop(0))
    return chosen


def _write(target: str, values: list[bytes | None]) -> None:
    lines = [json.dumps({"target": target, "value": None if v is None else v.decode()}) for v in values]
    (CORPUS / f"{target}.jsonl").write_text("\n".join(lines) + "\n")
    ops = Counter("tombstone" if v is None else json.loads(v)["op"] for v in values)
    print(f"{target}: {len(values)} events {dict(ops)}")


def refresh() -> None:
    settings = load_settings()
    CORPUS.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        _write(table, _real_events(f"{settings.kafka.topic_prefix}.{table}"))
    _write("fuzz.every_type", every_type_events(80))
