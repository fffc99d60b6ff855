"""Against the real stack: ``cdcflow dlq`` counts, plans and replays exactly once, through the commands a user types.

Every test owns its group (``_cdcflow.dlq.<group>``, its replay, progress and audit topics) and a source topic
prefix of its own; DLQ records are published by the writer's real DLQ publisher. Replayed records are read
back ``read_committed`` and counted by their ``cdcflow.replayed.from`` header.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from services.common.debezium.records import DecodeFailure, Reason
from services.common.kafka import Message, ensure_topics, producer, read_topic, topic_names, topic_watermarks
from services.common.replay import REPLAY_COUNT, REPLAYED_FROM, Coordinate, replay_topic, replayed_from
from services.common.settings import Settings
from services.consumer.dlq import DlqPublisher
from services.consumer.faults import CRASH_MARKER_ENV
from services.dlq.app import DlqTool
from services.dlq.progress import audit_topic, progress_topic
from services.dlq.records import DlqRecord
from services.dlq.selection import Filters
from services.stack.runtime import Stack
from tests.fixtures.pipeline import (
    WriterProcess,
    partition_ends,
    read_lake_table,
    read_partitions,
    real_events,
    wait_until,
    wait_until_committed,
)

CDCFLOW = str(Path(sys.executable).parent / "cdcflow")


@dataclass
class Scratch:
    settings: Settings
    group: str
    prefix: str

    @property
    def source(self) -> str:
        return f"{self.prefix}.lending.transactions"

    def cdcflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [CDCFLOW, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "CDCFLOW_LOG__FORMAT": "json"},
        )
        if check:
            assert done.returncode == 0, f"cdcflow {' '.join(args)} exited {done.returncode}: {done.stderr[-3000:]}"
        return done

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [CDCFLOW, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CDCFLOW_LOG__FORMAT": "json"},
        )

    def plan(self, *filters: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(
            self.cdcflow("dlq", "replay", "-g", self.group, *filters, "--json").stdout
        )
        return document

    def publish(self, reason: str, offsets: range, value: bytes | None = None, partitions: int = 3) -> set[Coordinate]:
        """DLQ records for source records at ``offsets``, published by the writer's DLQ publisher."""
        publisher = DlqPublisher(self.settings.kafka, self.group, "test-worker")
        published = set()
        try:
            for offset in offsets:
                partition = offset % partitions
                message = Message(
                    topic=self.source,
                    partition=partition,
                    offset=offset,
                    key=f'{{"transaction_id": {offset}}}'.encode(),
                    value=value if value is not None else f'{{"payload": {{"n": {offset}}}}}'.encode(),
                    headers=[("origin", b"test")],
                    # recent: the DLQ keeps the original time, and retention (7 days) deletes by it
                    timestamp=(TIMESTAMP_CREATE_TIME, int(time.time() * 1000) - 60_000 + offset),
                )
                assert publisher.publish(DecodeFailure(message, reason, f"{reason} at {offset}"))
                published.add((self.source, partition, offset))
            for partition in range(partitions):
                publisher.confirm(self.source, partition, timeout_s=30)
        finally:
            publisher.close()
        return published

    def replayed(self, topic: str | None = None) -> Counter[Coordinate]:
        """The original coordinates of every committed record of the replay topic (or ``topic``)."""
        found: Counter[Coordinate] = Counter()
        for message in read_topic(self.settings.kafka, topic or replay_topic(self.group)).messages:
            original = replayed_from(message.headers())
            assert original is not None
            found[original] += 1
        return found

    def progress_count(self, plan_id: str) -> int:
        try:
            messages = read_topic(self.settings.kafka, progress_topic(self.group)).messages
        except KeyError:
            return 0
        return sum(1 for m in messages if json.loads(m.value() or b"{}").get("plan") == plan_id)

    def audit(self, plan_id: str) -> dict[str, Any]:
        records = [
            m for m in read_topic(self.settings.kafka, audit_topic(self.group)).messages if m.key() == plan_id.encode()
        ]
        latest: dict[str, Any] = json.loads(records[-1].value() or b"{}")
        return latest


@pytest.fixture
def scratch(stack: Stack, settings: Settings) -> Scratch:
    tag = uuid.uuid4().hex[:8]
    return Scratch(settings, f"test-dlqtool-{tag}", f"dlqtool{tag}")


def _ends(settings: Settings, topics: list[str]) -> dict[str, dict[int, tuple[int, int]]]:
    return {t: topic_watermarks(settings.kafka, t) for t in topics}


def test_list_counts_each_original_once_and_a_dry_run_changes_nothing(scratch: Scratch) -> None:
    bad = scratch.publish(Reason.SCHEMA_MISMATCH, range(0, 12))
    scratch.publish(Reason.MALFORMED_JSON, range(100, 105))
    # a writer killed between the DLQ acknowledgement and its commit: the same record is in the DLQ twice
    dlq = f"_cdcflow.dlq.{scratch.group}"
    copy = next(m for m in read_topic(scratch.settings.kafka, dlq).messages)
    client = producer(scratch.settings.kafka)
    client.produce(
        dlq, key=copy.key(), value=copy.value(), headers=copy.headers(), partition=int(copy.partition() or 0)
    )
    assert client.flush(30) == 0

    summary = json.loads(scratch.cdcflow("dlq", "list", "-g", scratch.group, "--json").stdout)
    (group,) = summary["groups"]
    assert (group["dlq_records"], group["records"], group["duplicates"]) == (18, 17, 1)
    assert (group["pending"], group["replayed"], group["parked"]) == (17, 0, 0)
    by_reason = {row["reason"]: row["records"] for row in group["by"]}
    assert by_reason == {Reason.SCHEMA_MISMATCH: 12, Reason.MALFORMED_JSON: 5}
    assert {row["table"] for row in group["by"]} == {"lending.transactions"}

    before_topics = topic_names(scratch.settings.kafka)
    mine = [t for t in before_topics if scratch.group in t or scratch.prefix in t]
    before = _ends(scratch.settings, mine)
    plan = scratch.plan("--reason", Reason.SCHEMA_MISMATCH)
    assert plan["selected"] == 12
    assert plan["duplicates_skipped"] <= 1
    # no topic created: none of the tool's own (replay, progress, audit: all named after the group) nor the
    # source's; other topics of the shared broker may come and go meanwhile
    now = topic_names(scratch.settings.kafka)
    assert sorted(t for t in now if scratch.group in t or scratch.prefix in t) == sorted(mine)
    assert not {t for t in now if t.startswith("_cdcflow.")} - set(before_topics)
    assert _ends(scratch.settings, mine) == before  # no end offset moved

    shown = json.loads(scratch.cdcflow("dlq", "show", "-g", scratch.group, f"{scratch.source}:0:0").stdout)
    assert shown[0]["error"]["reason"] == Reason.SCHEMA_MISMATCH
    assert shown[0]["value"] == {"payload": {"n": 0}}
    assert len(bad) == 12


def test_execute_replays_exactly_the_plan_once_and_refuses_a_changed_selection(scratch: Scratch) -> None:
    selected = scratch.publish(Reason.SCHEMA_MISMATCH, range(0, 10))
    scratch.publish(Reason.MALFORMED_JSON, range(100, 103))
    plan = scratch.plan("--reason", Reason.SCHEMA_MISMATCH)

    selected |= scratch.publish(Reason.SCHEMA_MISMATCH, range(10, 11))  # a new matching record: another plan
    refused = scratch.cdcflow(
        "dlq",
        "replay",
        "-g",
        scratch.group,
        "--reason",
        Reason.SCHEMA_MISMATCH,
        "--execute",
        plan["plan_id"],
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "Nothing was replayed" in refused.stderr
    assert replay_topic(scratch.group) not in topic_names(scratch.settings.kafka)

    plan = scratch.plan("--reason", Reason.SCHEMA_MISMATCH)  # reviewed again
    assert plan["selected"] == 11
    scratch.cdcflow(
        "dlq",
        "replay",
        "-g",
        scratch.group,
        "--reason",
        Reason.SCHEMA_MISMATCH,
        "--execute",
        plan["plan_id"],
    )
    replayed = scratch.replayed()
    assert replayed == Counter(dict.fromkeys(selected, 1))

    message = read_topic(scratch.settings.kafka, replay_topic(scratch.group)).messages[0]
    headers = dict(message.headers() or [])
    assert headers[REPLAY_COUNT] == b"1"
    assert headers["origin"] == b"test"
    assert not any(k.startswith(("cdcflow.error.", "cdcflow.source.")) for k in headers)
    original = replayed_from(message.headers())
    assert original is not None
    assert message.value() == f'{{"payload": {{"n": {original[2]}}}}}'.encode()

    again = scratch.cdcflow(
        "dlq",
        "replay",
        "-g",
        scratch.group,
        "--reason",
        Reason.SCHEMA_MISMATCH,
        "--execute",
        plan["plan_id"],
    )
    assert again.returncode == 0
    assert scratch.replayed() == replayed  # the same plan again replays nothing twice
    audit = scratch.audit(plan["plan_id"])
    assert (audit["replayed"], audit["parked"], audit["status"]) == (11, 0, "done")
    assert audit["who"]["user"]

    summary = json.loads(scratch.cdcflow("dlq", "list", "-g", scratch.group, "--json").stdout)["groups"][0]
    assert (summary["replayed"], summary["pending"]) == (11, 3)


def _more_than(scratch: Scratch, plan_id: str, done: int) -> Callable[[], bool]:
    return lambda: scratch.progress_count(plan_id) > done


def test_kill_9_three_times_mid_replay_then_every_record_reaches_the_target_once(scratch: Scratch) -> None:
    selected = scratch.publish(Reason.DECODER_ERROR, range(0, 60))
    plan = scratch.plan("--reason", Reason.DECODER_ERROR)
    execute = ("dlq", "replay", "-g", scratch.group, "--reason", Reason.DECODER_ERROR, "--execute", plan["plan_id"])
    done_before = 0
    for _ in range(3):
        proc = scratch.start(*execute, "--rate", "5")  # 60 records take 12 s
        wait_until("the replay to commit a batch", _more_than(scratch, plan["plan_id"], done_before), 60, 0.05)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        done = scratch.progress_count(plan["plan_id"])
        assert done_before < done < 60, f"not killed mid-run: {done} of 60 done"
        done_before = done
        assert sum(scratch.replayed().values()) == done  # committed replays and progress move together
    scratch.cdcflow(*execute)
    assert scratch.replayed() == Counter(dict.fromkeys(selected, 1))
    assert scratch.audit(plan["plan_id"])["replayed"] == 60


def test_a_second_concurrent_replay_fences_the_first_and_nothing_is_replayed_twice(scratch: Scratch) -> None:
    selected = scratch.publish(Reason.TOO_DEEP, range(0, 40))
    plan = scratch.plan("--reason", Reason.TOO_DEEP)
    execute = ("dlq", "replay", "-g", scratch.group, "--reason", Reason.TOO_DEEP, "--execute", plan["plan_id"])
    # 40 records take 80 s: the second starts long before, even on a host busy enough to take seconds per start
    first = scratch.start(*execute, "--rate", "0.5")
    wait_until("the first replay to commit a batch", lambda: scratch.progress_count(plan["plan_id"]) > 0, 60, 0.1)
    second = scratch.cdcflow(*execute)
    assert second.returncode == 0
    _, stderr = first.communicate(timeout=150)
    stderr = stderr or ""
    assert first.returncode == 3, stderr[-2000:]
    assert "fenced" in stderr
    assert scratch.replayed() == Counter(dict.fromkeys(selected, 1))
    assert scratch.audit(plan["plan_id"])["replayed"] == 40


def test_rate_caps_records_per_second_and_the_audit_counts_what_was_replayed(scratch: Scratch) -> None:
    selected = scratch.publish(Reason.OVERSIZED, range(0, 300))
    plan = scratch.plan("--reason", Reason.OVERSIZED)
    scratch.cdcflow(
        "dlq",
        "replay",
        "-g",
        scratch.group,
        "--reason",
        Reason.OVERSIZED,
        "--rate",
        "100",
        "--execute",
        plan["plan_id"],
    )
    stamps = sorted(
        json.loads(m.value() or b"{}")["at_ms"]
        for m in read_topic(scratch.settings.kafka, progress_topic(scratch.group)).messages
    )
    assert len(stamps) == 300
    busiest = max(sum(1 for s in stamps if start <= s < start + 1000) for start in stamps)
    assert busiest <= 120, f"{busiest} records in one second at --rate 100"  # 100/s plus one batch of 20
    assert (stamps[-1] - stamps[0]) / 1000 >= 2.5  # 300 records take about 3 s
    assert scratch.replayed() == Counter(dict.fromkeys(selected, 1))
    audit = scratch.audit(plan["plan_id"])
    assert (audit["replayed"], audit["parked"], audit["selected"]) == (300, 0, 300)


def test_to_source_republishes_to_the_original_partition(scratch: Scratch) -> None:
    ensure_topics(scratch.settings.kafka, [scratch.source])
    selected = scratch.publish(Reason.UNKNOWN_TABLE, range(0, 5))
    plan = scratch.plan("--reason", Reason.UNKNOWN_TABLE, "--to-source")
    scratch.cdcflow(
        "dlq",
        "replay",
        "-g",
        scratch.group,
        "--reason",
        Reason.UNKNOWN_TABLE,
        "--to-source",
        "--execute",
        plan["plan_id"],
    )
    found = list(read_partitions(scratch.settings, partition_ends(scratch.settings, [scratch.source])))
    assert sorted((replayed_from(m.headers()), m.partition()) for m in found) == sorted((c, c[1]) for c in selected)
    assert replay_topic(scratch.group) not in topic_names(scratch.settings.kafka)


def test_the_writer_lands_replayed_records_in_their_original_table_at_their_original_coordinates(
    scratch: Scratch, writer: WriterProcess
) -> None:
    """Real events dead-lettered (as a contract would have refused them) are replayed: the writer lands them as
    rows of lending.transactions with their original coordinates; a record still bad goes back to the DLQ as
    the same record, replayed once."""
    settings = scratch.settings
    real = real_events(settings, "transactions", 8, partition=0, per_partition=40)[:8]
    good = set()
    for index, event in enumerate(real):
        good |= scratch.publish(Reason.SCHEMA_MISMATCH, range(500 + index, 501 + index), value=event.value())
    still_bad = scratch.publish(Reason.SCHEMA_MISMATCH, range(900, 901), value=b'{"payload": not json')
    plan = scratch.plan("--reason", Reason.SCHEMA_MISMATCH)
    scratch.cdcflow(
        "dlq", "replay", "-g", scratch.group, "--reason", Reason.SCHEMA_MISMATCH, "--execute", plan["plan_id"]
    )

    writer.group = scratch.group
    writer.env_overrides["CDCFLOW_KAFKA__TOPIC_PREFIX"] = scratch.prefix
    proc = writer.start()
    # the last record of each partition, plus one (a transaction's commit marker takes an offset after it)
    replay_ends: dict[tuple[str, int], int] = {}
    for message in read_topic(settings.kafka, replay_topic(scratch.group)).messages:
        replay_ends[(str(message.topic()), int(message.partition() or 0))] = int(message.offset() or 0) + 1
    wait_until_committed(settings, scratch.group, replay_ends, timeout_s=120)
    assert proc.poll() is None, writer.logs()[-3000:]
    rows = read_lake_table(writer.lake_root, scratch.prefix, "lending.transactions")
    landed = Counter(
        zip(*(rows.column(c).to_pylist() for c in ("_kafka_topic", "_kafka_partition", "_kafka_offset")), strict=True)
    )
    assert landed == Counter(dict.fromkeys(good, 1))
    files = list((writer.lake_root / scratch.prefix).rglob("*.parquet"))
    assert files
    assert all("-r" in f.name for f in files)  # a replay file's name never collides with a source file's

    summary = json.loads(scratch.cdcflow("dlq", "list", "-g", scratch.group, "--json").stdout)["groups"][0]
    assert (summary["records"], summary["replayed"], summary["pending"]) == (len(good) + 1, len(good), 1)
    (shown, again) = sorted(
        json.loads(
            scratch.cdcflow("dlq", "show", "-g", scratch.group, ":".join(map(str, next(iter(still_bad))))).stdout
        ),
        key=lambda d: d["replay_count"],
    )
    assert (shown["replay_count"], again["replay_count"]) == (0, 1)
    assert again["headers"][REPLAYED_FROM] == ":".join(map(str, next(iter(still_bad))))
    assert writer.terminate(proc) == 0


def test_a_value_the_dlq_left_out_is_replayed_from_the_source_topic(scratch: Scratch) -> None:
    """A record too large for the DLQ is published without its value; the replay reads the value back from the
    source topic (checked against the SHA-256 the DLQ kept)."""
    ensure_topics(scratch.settings.kafka, [scratch.source])
    value = os.urandom(40_000)  # does not compress: over the publisher's limit below, it is left out
    client = producer(scratch.settings.kafka)
    client.produce(scratch.source, key=b"big", value=value, partition=1)
    assert client.flush(30) == 0
    (original,) = read_partitions(scratch.settings, partition_ends(scratch.settings, [scratch.source]))
    limit: dict[str, Any] = {"message.max.bytes": 20_000}
    publisher = DlqPublisher(scratch.settings.kafka, scratch.group, "test-worker", **limit)
    try:
        assert publisher.publish(DecodeFailure(original, Reason.OVERSIZED, "too large"))
        publisher.confirm(scratch.source, 1, timeout_s=30)
    finally:
        publisher.close()

    (shown,) = json.loads(scratch.cdcflow("dlq", "show", "-g", scratch.group, f"{scratch.source}:1:0").stdout)
    assert shown["value_encoding"] == "omitted"
    plan = scratch.plan("--reason", Reason.OVERSIZED)
    scratch.cdcflow("dlq", "replay", "-g", scratch.group, "--reason", Reason.OVERSIZED, "--execute", plan["plan_id"])
    (replayed,) = read_topic(scratch.settings.kafka, replay_topic(scratch.group)).messages
    assert replayed.value() == value
    assert replayed_from(replayed.headers()) == (scratch.source, 1, 0)


class _SourceOverASlowLink(DlqTool):
    """The source topic of a remote cluster: each read of a value the DLQ left out takes seconds."""

    def source_value(self, record: DlqRecord) -> bytes | None:
        time.sleep(_SLOW_READ_S)
        return super().source_value(record)


_SLOW_READ_S = 4.0


def test_values_read_back_from_the_source_never_hold_a_transaction_open(scratch: Scratch) -> None:
    """Four values left out of the DLQ take 16 s to read back, far past a 1 s transaction timeout: they are
    read before the transaction opens, so the broker never aborts it and all four are replayed."""
    ensure_topics(scratch.settings.kafka, [scratch.source])
    client = producer(scratch.settings.kafka)
    values = [os.urandom(40_000) for _ in range(4)]  # does not compress: over the publisher's limit below
    for value in values:
        client.produce(scratch.source, key=b"big", value=value, partition=1)
    assert client.flush(30) == 0
    originals = read_partitions(scratch.settings, partition_ends(scratch.settings, [scratch.source]))
    limit: dict[str, Any] = {"message.max.bytes": 20_000}
    publisher = DlqPublisher(scratch.settings.kafka, scratch.group, "test-worker", **limit)
    try:
        for original in originals:
            assert publisher.publish(DecodeFailure(original, Reason.OVERSIZED, "too large"))
        publisher.confirm(scratch.source, 1, timeout_s=30)
    finally:
        publisher.close()
    kafka = scratch.settings.kafka.model_copy(update={"extra": {"transaction.timeout.ms": "1000"}})
    tool = _SourceOverASlowLink(kafka, scratch.settings.dlq, scratch.group)
    filters = Filters(reasons=(Reason.OVERSIZED,))
    plan = tool.plan(filters, to_source=False, max_replays=3)
    outcome = tool.execute(plan.plan_id, filters, to_source=False, max_replays=3, rate=None, arguments=[])
    assert (outcome.replayed, outcome.parked) == (4, 0)
    replayed = read_topic(scratch.settings.kafka, replay_topic(scratch.group)).messages
    assert [m.value() for m in replayed] == values


def test_purge_is_a_dry_run_by_default_and_keeps_pending_records(scratch: Scratch) -> None:
    replayed = scratch.publish(Reason.SCHEMA_MISMATCH, range(0, 6), partitions=1)
    pending = scratch.publish(Reason.MALFORMED_JSON, range(6, 9), partitions=1)  # after them in the same DLQ partition
    plan = scratch.plan("--reason", Reason.SCHEMA_MISMATCH)
    scratch.cdcflow(
        "dlq", "replay", "-g", scratch.group, "--reason", Reason.SCHEMA_MISMATCH, "--execute", plan["plan_id"]
    )
    dlq = f"_cdcflow.dlq.{scratch.group}"
    before = topic_watermarks(scratch.settings.kafka, dlq)
    until = "2100-01-01T00:00"

    dry = scratch.cdcflow("dlq", "purge", "-g", scratch.group, "--until", until)
    assert "would delete 6" in dry.stdout
    assert topic_watermarks(scratch.settings.kafka, dlq) == before

    scratch.cdcflow("dlq", "purge", "-g", scratch.group, "--until", until, "--execute")
    left = {m.offset(): m for m in read_topic(scratch.settings.kafka, dlq).messages}
    assert len(left) == len(pending)  # the replayed ones are gone, the pending ones held the cut
    summary = json.loads(scratch.cdcflow("dlq", "list", "-g", scratch.group, "--json").stdout)["groups"][0]
    assert (summary["records"], summary["pending"]) == (3, 3)

    scratch.cdcflow("dlq", "purge", "-g", scratch.group, "--until", until, "--include-pending", "--execute")
    assert read_topic(scratch.settings.kafka, dlq).messages == []
    audits = [
        json.loads(m.value() or b"{}") for m in read_topic(scratch.settings.kafka, audit_topic(scratch.group)).messages
    ]
    purges = sorted((a["at_ms"], a["deleted"]) for a in audits if a.get("action") == "purge")
    assert [deleted for _, deleted in purges] == [6, 3]
    assert len(replayed) == 6


def test_a_record_with_garbled_source_headers_is_never_replayed_and_holds_a_purge(scratch: Scratch) -> None:
    """A DLQ record whose source headers name no coordinate that reads back (here a negative offset) is an
    unidentified record: never replayed (it would be replayed again at every --execute, its progress entry
    unreadable), and a purge stops before it as before a pending one."""
    dlq = f"_cdcflow.dlq.{scratch.group}"
    before = scratch.publish(Reason.SCHEMA_MISMATCH, range(0, 2), partitions=1)
    copy = read_topic(scratch.settings.kafka, dlq).messages[0]
    garbled = {**dict(copy.headers() or []), "cdcflow.source.offset": b"-5"}
    client = producer(scratch.settings.kafka)
    client.produce(
        dlq, key=copy.key(), value=copy.value(), headers=list(garbled.items()), partition=int(copy.partition() or 0)
    )
    assert client.flush(30) == 0
    after = scratch.publish(Reason.SCHEMA_MISMATCH, range(2, 4), partitions=1)

    plan = scratch.plan("--reason", Reason.SCHEMA_MISMATCH)
    assert plan["selected"] == 4
    scratch.cdcflow(
        "dlq", "replay", "-g", scratch.group, "--reason", Reason.SCHEMA_MISMATCH, "--execute", plan["plan_id"]
    )
    assert scratch.plan("--reason", Reason.SCHEMA_MISMATCH)["selected"] == 0  # nothing left to replay, ever
    assert scratch.replayed() == Counter(before | after)
    (group,) = json.loads(scratch.cdcflow("dlq", "list", "-g", scratch.group, "--json").stdout)["groups"]
    assert (group["unidentified"], group["pending"], group["replayed"]) == (1, 0, 4)

    scratch.cdcflow("dlq", "purge", "-g", scratch.group, "--until", "2100-01-01T00:00", "--execute")
    left = read_topic(scratch.settings.kafka, dlq).messages
    assert [dict(m.headers() or [])["cdcflow.source.offset"] for m in left] == [b"-5", b"2", b"3"]


def test_a_replayed_record_that_kills_the_decoder_is_quarantined_and_dead_lettered_again(
    scratch: Scratch, writer: WriterProcess
) -> None:
    """The crash-loop guard covers the replay topic: the writer that dies decoding a replayed record is restarted
    once, re-decodes the record as a record of its original table in a child process, sends it back to the DLQ
    (``decoder_crash``, replay count 1) and lands the others."""
    settings = scratch.settings
    real = real_events(settings, "transactions", 3, partition=1, per_partition=40)[:3]
    good: set[Coordinate] = set()
    for index, event in enumerate(real):
        good |= scratch.publish(Reason.DECODER_CRASH, range(700 + index, 701 + index), value=event.value())
    marker = f"crash-here-{uuid.uuid4().hex}"
    (crasher,) = scratch.publish(Reason.DECODER_CRASH, range(800, 801), value=f'{{"payload": "{marker}"}}'.encode())
    plan = scratch.plan("--reason", Reason.DECODER_CRASH)
    scratch.cdcflow(
        "dlq", "replay", "-g", scratch.group, "--reason", Reason.DECODER_CRASH, "--execute", plan["plan_id"]
    )

    writer.group = scratch.group
    writer.env_overrides.update(
        {
            "CDCFLOW_KAFKA__TOPIC_PREFIX": scratch.prefix,
            "CDCFLOW_KAFKA__EXTRA__SESSION_TIMEOUT_MS": "6000",
            CRASH_MARKER_ENV: marker,
        }
    )
    first = writer.start()
    wait_until("the writer to die on the replayed record", lambda: first.poll() is not None, timeout_s=90)
    assert first.returncode == -signal.SIGSEGV, writer.logs()[-3000:]
    second = writer.start()
    replay_ends: dict[tuple[str, int], int] = {}
    for message in read_topic(settings.kafka, replay_topic(scratch.group)).messages:
        replay_ends[(str(message.topic()), int(message.partition() or 0))] = int(message.offset() or 0) + 1
    wait_until_committed(settings, scratch.group, replay_ends, timeout_s=180)
    assert second.poll() is None, writer.logs()[-3000:]

    rows = read_lake_table(writer.lake_root, scratch.prefix, "lending.transactions")
    columns = (rows.column(c).to_pylist() for c in ("_kafka_topic", "_kafka_partition", "_kafka_offset"))
    assert Counter(zip(*columns, strict=True)) == Counter(dict.fromkeys(good, 1))
    summary = json.loads(scratch.cdcflow("dlq", "list", "-g", scratch.group, "--json").stdout)["groups"][0]
    assert (summary["records"], summary["replayed"], summary["pending"]) == (4, 3, 1)
    copies = json.loads(scratch.cdcflow("dlq", "show", "-g", scratch.group, ":".join(map(str, crasher))).stdout)
    assert sorted((c["replay_count"], c["error"]["reason"]) for c in copies) == [
        (0, Reason.DECODER_CRASH),
        (1, Reason.DECODER_CRASH),
    ]
    assert writer.terminate(second) == 0


def test_a_record_replayed_max_replays_times_is_parked_not_replayed(scratch: Scratch) -> None:
    """A record that came back after its third replay (its DLQ copy says ``cdcflow.replay.count: 3``) is parked:
    recorded as such, counted in the audit and by ``list``, and not republished."""
    publisher = DlqPublisher(scratch.settings.kafka, scratch.group, "test-worker")
    try:
        for offset, count in ((1, 3), (2, 1)):
            original = f"{scratch.source}:0:{offset}"
            message = Message(
                topic=replay_topic(scratch.group),
                partition=0,
                offset=offset,
                key=b"k",
                value=b'{"payload": 1}',
                headers=[(REPLAY_COUNT, str(count).encode()), (REPLAYED_FROM, original.encode())],
                timestamp=(TIMESTAMP_CREATE_TIME, int(time.time() * 1000)),
            )
            assert publisher.publish(DecodeFailure(message, Reason.WRONG_TYPE, "still wrong"))
        publisher.confirm(replay_topic(scratch.group), 0, timeout_s=30)
    finally:
        publisher.close()

    plan = scratch.plan("--reason", Reason.WRONG_TYPE)
    assert (plan["replay"], plan["park"]) == (1, 1)
    scratch.cdcflow("dlq", "replay", "-g", scratch.group, "--reason", Reason.WRONG_TYPE, "--execute", plan["plan_id"])
    assert scratch.replayed() == Counter({(scratch.source, 0, 2): 1})
    republished = read_topic(scratch.settings.kafka, replay_topic(scratch.group)).messages[0]
    assert dict(republished.headers() or [])[REPLAY_COUNT] == b"2"
    summary = json.loads(scratch.cdcflow("dlq", "list", "-g", scratch.group, "--json").stdout)["groups"][0]
    assert (summary["records"], summary["replayed"], summary["parked"], summary["pending"]) == (2, 1, 1, 0)
    audit = scratch.audit(plan["plan_id"])
    assert (audit["replayed"], audit["parked"]) == (1, 1)
    assert scratch.plan("--reason", Reason.WRONG_TYPE)["selected"] == 0  # parked stays parked
