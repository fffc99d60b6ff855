"""Against the real stack: kill -9 the lake writer at random moments while the source changes.

Invariant 1 (nothing lost, nothing doubled) and the lake's naming rule: a batch re-read after a crash starts
at the committed offset and overwrites the orphan file of the same name, so after the writer drains every
offset of every captured partition is a lake row, a tombstone or a DLQ record, and no offset is in two
lake files.
"""

from __future__ import annotations

import random
import time

import pytest

from services.common.settings import Settings
from services.stack.runtime import Stack
from tests.fixtures.pipeline import (
    WorkloadThread,
    WriterProcess,
    audit_offsets,
    partition_ends,
    wait_for_log_event,
    wait_until_committed,
)

# the writer's core behaviour holds on both of its paths (tests/fixtures/pipeline.py: writer_path)
pytestmark = pytest.mark.usefixtures("writer_path")

SEED = 20_261_122
KILLS = 6
TABLES = ("customers", "facilities", "transactions")
WORKLOAD_RATE = 25.0
WORKLOAD_SECONDS = 40.0
# A killed member holds its partitions until its session expires: keep that short (the broker's minimum).
SESSION_TIMEOUT_MS = "6000"


def test_kill_9_at_random_moments_loses_and_doubles_nothing(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    rng = random.Random(SEED)
    prefix = settings.kafka.topic_prefix
    topics = [f"{prefix}.lending.{t}" for t in TABLES]
    writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__EXTRA__SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS,
            "CDCFLOW_WRITER__FLUSH_MAX_ROWS": "300",  # many small files: more moments to be killed mid-batch
        }
    )
    began = time.monotonic()
    workload = WorkloadThread(settings, SEED, WORKLOAD_RATE, WORKLOAD_SECONDS)
    workload.start()

    kills = 0
    delays: list[float] = []
    for _ in range(KILLS):
        proc = writer.start()
        wait_for_log_event(writer, proc, "writer.assigned")
        delay = rng.uniform(0.2, 3.0)
        delays.append(delay)
        time.sleep(delay)  # the random moment of the kill, not a synchronisation
        assert proc.poll() is None, f"the writer died on its own (exit {proc.returncode}):\n{writer.logs()}"
        writer.kill(proc)
        assert proc.returncode == -9
        kills += 1

    final = writer.start()
    wait_for_log_event(writer, final, "writer.assigned")  # a SIGTERM before its handler is installed kills it
    workload.join(timeout=WORKLOAD_SECONDS + 60)
    assert not workload.is_alive(), "the workload did not finish"
    assert workload.error is None, f"the workload failed: {workload.error!r}"
    assert workload.result is not None
    assert workload.result.total > 0

    ends = partition_ends(settings, topics)
    wait_until_committed(settings, writer.group, ends, timeout_s=120)
    assert final.poll() is None, f"the last writer stopped (exit {final.returncode}):\n{writer.logs()}"
    assert writer.terminate(final, timeout_s=settings.writer.grace_s) == 0

    audit = audit_offsets(settings, writer.group, writer.lake_root, prefix, ends)
    print(
        f"\n[writer crash] kills={kills} delays_s={[round(d, 2) for d in delays]} "
        f"workload_ops={workload.result.total} {audit.summary()} runtime_s={time.monotonic() - began:.1f}"
    )
    assert kills >= 5
    assert audit.in_lake > 0
    assert audit.missing == [], f"{len(audit.missing)} offsets neither in the lake, tombstones nor DLQ'd: " + str(
        audit.missing[:20]
    )
    assert audit.duplicates == 0, f"{audit.duplicates} Kafka coordinates are in more than one lake row"
