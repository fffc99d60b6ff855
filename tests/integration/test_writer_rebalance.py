"""Against the real stack: three writers share a group, one is killed mid-stream and a fourth joins.

Its partitions move to the survivors once its session expires, and they restart from its last commit;
the newcomer takes some partitions from the others (cooperative-sticky, commit on revoke). After the drain
no offset is missing. Zombie overlaps may legitimately leave duplicate rows (the loader dedups them): they
are reported, not failed on.
"""

from __future__ import annotations

import json
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
    writer_log,
)

# the writer's core behaviour holds on both of its paths (tests/fixtures/pipeline.py: writer_path)
pytestmark = pytest.mark.usefixtures("writer_path")

SEED = 4_242
TABLES = ("customers", "facilities", "transactions")
WORKLOAD_RATE = 25.0
WORKLOAD_SECONDS = 30.0
SESSION_TIMEOUT_MS = "6000"  # the broker's minimum: the killed member's partitions move 6 s after the kill


def _held(log: str) -> set[str]:
    """The partitions a writer holds according to its log: assigned, minus revoked and lost."""
    held: set[str] = set()
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        partitions = set(entry.get("partitions") or [])
        if entry.get("event") == "writer.assigned":
            held |= partitions
        elif entry.get("event") in ("writer.revoked", "writer.lost"):
            held -= partitions
    return held


def test_a_member_killed_mid_stream_and_a_newcomer_lose_no_offset(
    stack: Stack, settings: Settings, writer: WriterProcess
) -> None:
    rng = random.Random(SEED)
    prefix = settings.kafka.topic_prefix
    topics = [f"{prefix}.lending.{t}" for t in TABLES]
    writer.env_overrides.update(
        {"CDCFLOW_KAFKA__EXTRA__SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS, "CDCFLOW_WRITER__FLUSH_MAX_ROWS": "300"}
    )
    began = time.monotonic()
    members = [writer.start() for _ in range(3)]
    for proc in members:
        wait_for_log_event(writer, proc, "writer.assigned", timeout_s=90)

    workload = WorkloadThread(settings, SEED, WORKLOAD_RATE, WORKLOAD_SECONDS)
    workload.start()

    # mid-stream: the workload is flowing and the victim holds partitions
    delay = rng.uniform(3.0, 8.0)
    time.sleep(delay)  # the random moment of the kill, not a synchronisation
    victim = members[rng.randrange(len(members))]
    victim_held = _held(writer_log(writer, victim))
    assert victim_held, "the writer to kill holds no partition"
    for proc in members:
        assert proc.poll() is None, f"a writer died on its own (exit {proc.returncode}):\n{writer.logs()}"
    writer.kill(victim)
    survivors = [p for p in members if p is not victim]
    newcomer = writer.start()
    wait_for_log_event(writer, newcomer, "writer.assigned", timeout_s=90)

    workload.join(timeout=WORKLOAD_SECONDS + 60)
    assert not workload.is_alive(), "the workload did not finish"
    assert workload.error is None, f"the workload failed: {workload.error!r}"
    assert workload.result is not None
    assert workload.result.total > 0

    ends = partition_ends(settings, topics)
    wait_until_committed(settings, writer.group, ends, timeout_s=120)
    newcomer_held = _held(writer_log(writer, newcomer))
    assert newcomer_held, "the fourth writer never got a partition"
    live = [*survivors, newcomer]
    for proc in live:
        assert proc.poll() is None, f"a writer stopped (exit {proc.returncode}):\n{writer.logs()}"
    exits = [writer.terminate(proc, timeout_s=settings.writer.grace_s) for proc in live]
    assert exits == [0, 0, 0]

    audit = audit_offsets(settings, writer.group, writer.lake_root, prefix, ends)
    rebalances = writer.logs().count('"event": "writer.assigned"') + writer.logs().count('"event": "writer.revoked"')
    print(
        f"\n[writer rebalance] writers=4 killed=writer-{writer.procs.index(victim)} after {delay:.2f}s "
        f"holding={len(victim_held)} newcomer_holds={len(newcomer_held)} "
        f"workload_ops={workload.result.total} rebalance_callbacks={rebalances} {audit.summary()} "
        f"runtime_s={time.monotonic() - began:.1f}"
    )
    assert audit.in_lake > 0
    assert audit.missing == [], f"{len(audit.missing)} offsets neither in the lake, tombstones nor DLQ'd: " + str(
        audit.missing[:20]
    )
