"""The enricher against the real stack, under each test's own topic prefix and group.

Inputs are Debezium events copied from the stack's topics with their rows and LSNs rewritten
(tests/fixtures/enricher.py), so each test knows the as-of join it must see; the output is read with
``read_committed`` and every input change is counted by its coordinates.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.kafka import (
    MAX_RECORD_BYTES,
    admin_client,
    consumer,
    delete_records_before,
    read_topic,
    topic_names,
    topic_watermarks,
)
from services.common.settings import Settings
from services.consumer.dlq import dlq_topic
from services.enricher.app import FENCED_EXIT
from services.stack.runtime import Stack
from tests.fixtures.enricher import (
    EnricherProcess,
    Workload,
    expected_joins,
    output_records,
    undecodable,
    unique_prefix,
)
from tests.fixtures.net import free_port
from tests.fixtures.pipeline import header_dict, wait_for_log_event


@pytest.fixture
def enricher(settings: Settings, tmp_path: Path) -> Iterator[EnricherProcess]:
    logs = tmp_path / "logs"
    logs.mkdir()
    prefix = unique_prefix("enr")
    process = EnricherProcess(prefix=prefix, group=f"{prefix}-group", state_dir=tmp_path / "store", log_dir=logs)
    yield process
    process.stop_all()
    doomed = [*topic_names(settings.kafka, f"{prefix}."), *topic_names(settings.kafka, dlq_topic(process.group))]
    admin = admin_client(settings.kafka)  # held until the deletions are done: a dropped client cancels them
    for future in admin.delete_topics(doomed, operation_timeout=30).values():
        future.result()


def _wait_for(what: Callable[[], bool], timeout_s: float, message: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, message()
        time.sleep(0.5)


def _caught_up(enricher: EnricherProcess) -> int:
    """How many instances have read their tables up to the ends seen at their start."""
    return enricher.logs().count('"event": "enricher.tables_caught_up"')


def _input_count(settings: Settings, workload: Workload) -> int:
    return len(expected_joins(settings, workload.prefix))


def _wait_for_all(
    settings: Settings, enricher: EnricherProcess, workload: Workload, timeout_s: float = 90
) -> list[dict[str, Any]]:
    wanted = _input_count(settings, workload)
    found: list[dict[str, Any]] = []

    def done() -> bool:
        found[:] = output_records(settings, enricher.prefix)
        return sum(1 for r in found if r["op"] != "t") >= wanted  # a truncate is no input change's record

    _wait_for(done, timeout_s, lambda: f"{len(found)} of {wanted} enriched records\n{enricher.logs()[-3000:]}")
    return found


def _side(record: dict[str, Any], side: str, *fields: str) -> Any:
    """A side as expected_joins gives it: the attributes' text, or the join state when not joined."""
    if record[f"{side}_join"] != "joined":
        return record[f"{side}_join"]
    return tuple(str(record[f]) for f in fields)


def _assert_exactly_once_and_as_of(settings: Settings, workload: Workload, records: list[dict[str, Any]]) -> None:
    expected = expected_joins(settings, workload.prefix)
    assert undecodable(settings, workload.prefix) == []  # the lake writer lands every one
    records = [r for r in records if r["op"] != "t"]  # a truncate has no row, so no input coordinates
    counts = Counter((r["source_partition"], r["source_offset"]) for r in records)
    twice = {c: n for c, n in counts.items() if n > 1}
    assert twice == {}, f"{len(twice)} input changes were emitted more than once: {sorted(twice.items())[:5]}"
    assert set(counts) == set(expected), f"missing {sorted(set(expected) - set(counts))[:5]}"
    wrong = []
    for record in records:
        customer = _side(record, "customer", "customer_type", "customer_status")
        facility = _side(record, "facility", "facility_status", "facility_interest_rate")
        want_customer, want_facility = expected[(record["source_partition"], record["source_offset"])]
        if (customer, facility) != (want_customer, want_facility) or record["released_by"] != "watermark":
            wrong.append((record, want_customer, want_facility))
    assert wrong == [], f"{len(wrong)} wrong joins, e.g. {wrong[:2]}"


def test_exactly_once_and_as_of_across_five_kills(stack: Stack, settings: Settings, enricher: EnricherProcess) -> None:
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set() and workload.next_tx < 2_000:
            workload.round(transactions=60, updates=30)
            time.sleep(0.1)

    producing = threading.Thread(target=produce, daemon=True)
    producing.start()
    rng = random.Random(3)
    for started in range(1, 6):
        proc = enricher.start()
        # each instance rebuilds its tables first (slow on a busy host); the kill lands while it joins
        _wait_for(lambda: _caught_up(enricher) >= started, 120, lambda: enricher.logs()[-3000:])  # noqa: B023
        time.sleep(rng.uniform(0.5, 3.0))
        assert proc.poll() is None, enricher.logs()[-3000:]
        enricher.kill(proc)
    producing.join(timeout=120)
    stop.set()
    proc = enricher.start()
    records = _wait_for_all(settings, enricher, workload)
    assert enricher.terminate(proc) == 0
    assert _caught_up(enricher) == 6
    _assert_exactly_once_and_as_of(settings, workload, records)


def test_a_second_instance_with_the_same_id_fences_the_first(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()
    workload.round(transactions=200, updates=50)
    first = enricher.start()
    _wait_for(lambda: len(output_records(settings, enricher.prefix)) > 0, 60, lambda: enricher.logs()[-3000:])
    second = enricher.start()  # same group, same instance id: same transactional id and group.instance.id
    assert first.wait(timeout=60) == FENCED_EXIT, enricher.logs()[-3000:]
    workload.round(transactions=200, updates=50)
    records = _wait_for_all(settings, enricher, workload)
    assert second.poll() is None
    assert enricher.terminate(second) == 0
    assert '"event": "enricher.fenced"' in enricher.logs()
    _assert_exactly_once_and_as_of(settings, workload, records)


def _waiting_changes(settings: Settings, enricher: EnricherProcess, count: int, *, max_wait_s: float) -> Workload:
    """``count`` transactions past every table's watermark, so each waits its whole wait (``max_wait_s``), for
    an enricher that holds at most 8 waiting changes."""
    enricher.env_overrides.update({"CDCFLOW_ENRICHER__MAX_WAIT_S": str(max_wait_s), "CDCFLOW_ENRICHER__MAX_HELD": "8"})
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()
    for _ in range(count):
        workload.transaction(workload.rng.randint(1, workload.customers), workload.rng.randint(1, workload.facilities))
    workload.flush()
    return workload


def test_changes_waiting_for_the_tables_are_bounded_by_pausing_the_input(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    """The tables fall behind the input: every change waits, and with no bound a busy input filled memory for
    up to the whole wait. The input pauses at ``max_held`` waiting changes and resumes as they go out; every
    change still goes out once."""
    workload = _waiting_changes(settings, enricher, 30, max_wait_s=1)
    proc = enricher.start()
    records = _wait_for_all(settings, enricher, workload)
    assert enricher.terminate(proc) == 0

    paused = [json.loads(line) for line in enricher.logs().splitlines() if '"event": "enricher.input_paused"' in line]
    assert len(paused) >= 3  # 30 changes at 8 a time
    assert {event["held"] for event in paused} == {8}  # never more than the bound
    assert Counter(r["released_by"] for r in records) == {"timeout": 30}
    coordinates = [(r["source_partition"], r["source_offset"]) for r in records]
    assert len(coordinates) == len(set(coordinates)) == 30


def test_partitions_paused_when_they_were_taken_away_are_read_again_when_they_come_back(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    """The input is paused when a member joins the group and takes some of its partitions; the held changes go
    out and the rest resume while those are away; the member leaves and they come back, and are read: a pause
    must not outlive the assignment it was made in, or their changes would never be enriched."""
    workload = _waiting_changes(settings, enricher, 60, max_wait_s=2)
    proc = enricher.start()
    wait_for_log_event(enricher, proc, "enricher.input_paused", timeout_s=120)
    member = consumer(settings.kafka, enricher.group)
    try:
        member.subscribe([workload.topic("transactions")])
        deadline = time.monotonic() + 60
        while not member.assignment():
            assert time.monotonic() < deadline, "the member took no partition"
            member.consume(timeout=0.5)
        wait_for_log_event(enricher, proc, "enricher.input_resumed", timeout_s=60)  # while they are away
    finally:
        member.close()  # its partitions go back to the enricher, not read past what it committed
    records = _wait_for_all(settings, enricher, workload)
    assert enricher.terminate(proc) == 0
    coordinates = [(r["source_partition"], r["source_offset"]) for r in records]
    assert len(coordinates) == len(set(coordinates)) == 60


def test_a_late_customer_is_joined_within_the_wait_and_marked_missing_after_it(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    enricher.env_overrides["CDCFLOW_ENRICHER__MAX_WAIT_S"] = "4"
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()
    proc = enricher.start()
    # a transaction of customer 500 at LSN t; the customer's row (LSN < t) reaches Kafka only later
    in_time = workload.transaction(500, 1)
    workload.flush()
    time.sleep(1.5)
    workload.customer(500, "ACTIVE", op="c", lsn=in_time - 5)
    workload.heartbeat()
    # customer 501: its row arrives after the wait has ended
    too_late = workload.transaction(501, 1)
    workload.flush()
    _wait_for(lambda: len(output_records(settings, enricher.prefix)) >= 2, 60, lambda: enricher.logs()[-3000:])
    workload.customer(501, "ACTIVE", op="c", lsn=too_late - 5)
    workload.heartbeat()
    time.sleep(2)
    records = {r["source_lsn"]: r for r in output_records(settings, enricher.prefix)}
    assert enricher.terminate(proc) == 0
    assert len(records) == 2
    joined, missing = records[in_time], records[too_late]
    assert (joined["customer_join"], joined["customer_lsn"], joined["released_by"]) == (
        "joined",
        in_time - 5,
        "watermark",
    )
    assert (missing["customer_join"], missing["customer_type"], missing["released_by"]) == ("missing", None, "timeout")
    assert missing["facility_join"] == "joined"


def test_a_wiped_store_is_rebuilt_before_any_join(stack: Stack, settings: Settings, enricher: EnricherProcess) -> None:
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()
    workload.round(transactions=150, updates=150)
    proc = enricher.start()
    _wait_for_all(settings, enricher, workload)
    assert enricher.terminate(proc) == 0
    shutil.rmtree(enricher.state_dir)
    for _ in range(3):
        workload.round(transactions=150, updates=150)
    port = free_port()
    enricher.env_overrides["CDCFLOW_ENRICHER__HEALTH_PORT"] = str(port)
    proc = enricher.start()
    records = _wait_for_all(settings, enricher, workload)
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'cdcflow_enricher_records_produced_total{released_by="watermark"}' in metrics
    assert enricher.terminate(proc) == 0
    assert enricher.logs().count('"event": "enricher.tables_caught_up"') == 2
    _assert_exactly_once_and_as_of(settings, workload, records)


def test_a_record_that_cannot_be_decoded_goes_to_the_dlq_once_with_its_coordinates(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    """A change of the input, and a record of a table side (read into the store, not joined): each in the
    enricher's DLQ once, with where it was read, across a restart that reads the table side again."""
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()
    workload.round(transactions=40, updates=10)
    topic, customers = workload.topic("transactions"), workload.topic("customers")
    workload.producer.produce(topic, key=b"bad", value=b'{"payload": not json', partition=2)
    keyless = b'{"op":"u","source":{"lsn":7,"ts_ms":7},"after":{"status":"ACTIVE"}}'
    workload.producer.produce(customers, key=b"keyless", value=keyless, partition=1)
    workload.round(transactions=40, updates=10)
    proc = enricher.start()
    records = _wait_for_all(settings, enricher, workload)
    assert enricher.terminate(proc) == 0
    shutil.rmtree(enricher.state_dir)  # the next start reads the table side again, the bad record with it
    proc = enricher.start()
    caught_up = '"event": "enricher.tables_caught_up"'
    _wait_for(lambda: enricher.logs().count(caught_up) == 2, 120, lambda: enricher.logs()[-3000:])
    records = _wait_for_all(settings, enricher, workload)
    assert enricher.terminate(proc) == 0

    dlq = read_topic(settings.kafka, dlq_topic(enricher.group)).messages
    found = {}
    for message in dlq:
        headers = {name: (value or b"").decode() for name, value in header_dict(message).items()}
        found[headers["cdcflow.source.topic"]] = (
            headers["cdcflow.error.reason"],
            headers["cdcflow.source.partition"],
            int(headers["cdcflow.source.offset"]),
            message.value(),
        )
    assert len(dlq) == len(found) == 2, [header_dict(m) for m in dlq]
    assert found[topic][:2] == ("not_json", "2")
    assert found[topic][3] == b'{"payload": not json'
    assert found[customers][:2] == ("no_key", "1")
    assert found[customers][3] == keyless
    assert (2, found[topic][2]) not in {(r["source_partition"], r["source_offset"]) for r in records}
    _assert_exactly_once_and_as_of(settings, workload, records)


def test_a_change_whose_enriched_record_no_topic_takes_goes_to_the_dlq_and_the_rest_go_out_once(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    """A customer with a long attribute, and a transaction that fits a topic with little to spare: with the
    customer joined its enriched record does not. The producer refused that record inside the transaction, so
    the enricher died on it, and again at every restart. Now that change goes to the DLQ with its value left
    out (it stays in the input topic, where the headers point), and every other change goes out once."""
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()
    workload.round(transactions=20, updates=5)
    customer = {**workload.templates["customers"]["after"], "customer_id": 1, "customer_type": "T" * (16 << 10)}
    workload.send("customers", "u", customer)
    workload.next_tx += 1  # the large one's id
    row = {**workload.templates["transactions"]["after"], "transaction_id": workload.next_tx - 1, "customer_id": 1}
    row.update({"facility_id": 1, "amount": 10.25, "reference": ""})
    event = {**workload.templates["transactions"], "op": "c", "before": None, "after": row}
    event["source"] = {**event["source"], "lsn": workload.lsn + 5, "ts_ms": 1_790_000_000_000, "txId": 1}
    row["reference"] = "r" * (MAX_RECORD_BYTES - (4 << 10) - len(json.dumps(event)))  # 4 KiB to spare
    large = json.dumps(event).encode()
    delivered: list[tuple[int, int]] = []
    workload.producer.produce(
        workload.topic("transactions"),
        key=json.dumps({"transaction_id": row["transaction_id"]}).encode(),
        value=large,
        on_delivery=lambda error, m: delivered.append((int(m.partition() or 0), int(m.offset() or 0))),
    )
    workload.flush()
    workload.round(transactions=20, updates=5)
    assert len(delivered) == 1
    wanted = _input_count(settings, workload) - 1

    proc = enricher.start()
    found: list[dict[str, Any]] = []

    def done() -> bool:
        found[:] = output_records(settings, enricher.prefix)
        return len(found) >= wanted

    _wait_for(done, 90, lambda: f"{len(found)} of {wanted} enriched records\n{enricher.logs()[-3000:]}")
    assert enricher.terminate(proc) == 0

    [dead] = read_topic(settings.kafka, dlq_topic(enricher.group)).messages
    headers = {name: (value or b"").decode() for name, value in header_dict(dead).items()}
    assert (headers["cdcflow.error.reason"], headers["cdcflow.value.omitted"], dead.value()) == (
        "too_large",
        "true",
        b"",
    )
    assert (int(headers["cdcflow.source.partition"]), int(headers["cdcflow.source.offset"])) == delivered[0]
    assert headers["cdcflow.source.topic"] == workload.topic("transactions")
    coordinates = [(r["source_partition"], r["source_offset"]) for r in found]
    assert len(coordinates) == len(set(coordinates)) == wanted
    assert delivered[0] not in set(coordinates)


def test_truncates_delete_a_tables_rows_from_their_lsn_and_go_out_as_truncates(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    """A truncate of customers (one event, on one partition) deletes every customer as of its LSN, until one is
    inserted again; a truncate of transactions goes out as a truncate, so silver empties the enriched table."""
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()
    workload.round(transactions=30, updates=10)
    before = workload.transaction(1, 1)
    truncated_at = workload.truncate("customers")
    after = workload.transaction(2, 1)
    workload.customer(2, "INACTIVE", op="c")
    again = workload.transaction(2, 1)
    transactions_truncated_at = workload.truncate("transactions")
    workload.round(transactions=30, updates=10)
    proc = enricher.start()
    records = _wait_for_all(settings, enricher, workload)
    assert enricher.terminate(proc) == 0
    by_lsn = {r["source_lsn"]: r for r in records}
    assert by_lsn[before]["customer_join"] == "joined"
    assert (by_lsn[after]["customer_join"], by_lsn[after]["customer_lsn"]) == ("deleted", truncated_at)
    assert (by_lsn[again]["customer_join"], by_lsn[again]["customer_status"]) == ("joined", "INACTIVE")
    assert by_lsn[again]["facility_join"] == "joined"
    truncates = [r for r in records if r["op"] == "t"]
    assert [(r["source_lsn"], r["source_committed_at_ms"]) for r in truncates] == [
        (transactions_truncated_at, 1_790_000_000_000 + transactions_truncated_at)
    ]
    assert read_topic(settings.kafka, dlq_topic(enricher.group)).messages == []
    _assert_exactly_once_and_as_of(settings, workload, records)


def test_a_table_partition_whose_records_are_all_gone_does_not_keep_it_unready(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    """Retention took every record of a customers partition: nothing is left to read there, so a fresh store is
    ready once the rest is read (before, the partition counted as unread for ever and /readyz stayed 503)."""
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()
    workload.round(transactions=20, updates=0)
    assert workload.producer.flush(30) == 0
    customers = workload.topic("customers")
    marks = topic_watermarks(settings.kafka, customers)
    emptied = next(p for p, (low, high) in sorted(marks.items()) if high > low)
    delete_records_before(settings.kafka, customers, {emptied: marks[emptied][1]})
    proc = enricher.start()
    caught_up = '"event": "enricher.tables_caught_up"'
    _wait_for(lambda: caught_up in enricher.logs(), 60, lambda: enricher.logs()[-3000:])
    assert enricher.terminate(proc) == 0


def test_not_ready_and_nothing_joined_until_the_tables_are_read(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    workload = Workload(settings, enricher.prefix, customers=15_000, facilities=15_000)
    workload.snapshot()
    workload.round(transactions=100, updates=20)
    port = free_port()
    enricher.env_overrides["CDCFLOW_ENRICHER__HEALTH_PORT"] = str(port)
    proc = enricher.start()
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while (not seen or seen[-1] != 200) and time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            seen.append(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code)
        if seen and seen[-1] == 503:
            assert output_records(settings, enricher.prefix) == []  # nothing joined while the tables are read
        time.sleep(0.05)
    assert 503 in seen, f"never saw the enricher not ready: {seen[:5]}"
    assert seen[-1] == 200
    records = _wait_for_all(settings, enricher, workload)
    assert enricher.terminate(proc) == 0
    _assert_exactly_once_and_as_of(settings, workload, records)


def test_sigterm_mid_stream_drains_and_the_next_start_goes_on_exactly_once(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()

    def produce() -> None:
        for _ in range(15):
            workload.round(transactions=60, updates=30)
            time.sleep(0.2)

    producing = threading.Thread(target=produce, daemon=True)
    producing.start()
    proc = enricher.start()
    _wait_for(lambda: len(output_records(settings, enricher.prefix)) > 100, 60, lambda: enricher.logs()[-3000:])
    began = time.monotonic()
    assert enricher.terminate(proc) == 0  # stop polling, commit the open transaction, close
    assert time.monotonic() - began < 30
    assert '"event": "enricher.drained"' in enricher.logs()
    producing.join(timeout=120)
    proc = enricher.start()
    records = _wait_for_all(settings, enricher, workload)
    # the first instance may have emitted everything before it stopped: a signal sent before this one has
    # installed its handlers would end it by default, not drain it
    _wait_for(lambda: enricher.logs().count('"event": "enricher.assigned"') >= 2, 60, lambda: enricher.logs()[-3000:])
    assert enricher.terminate(proc) == 0
    _assert_exactly_once_and_as_of(settings, workload, records)


MAX_ROUNDS = 600  # a bound on the workload of the rebalance test: 150 s of rounds at least


def test_two_instances_share_the_partitions_exactly_once_across_a_rebalance(
    stack: Stack, settings: Settings, enricher: EnricherProcess
) -> None:
    workload = Workload(settings, enricher.prefix)
    workload.snapshot()

    rebalanced = threading.Event()

    def produce() -> None:
        """Changes until 20 rounds after the rebalance, however long the instances take to get there."""
        after = 0
        for _ in range(MAX_ROUNDS):
            workload.round(transactions=30, updates=15)
            time.sleep(0.25)
            if rebalanced.is_set():
                after += 1
            if after >= 20:
                return

    producing = threading.Thread(target=produce, daemon=True)
    producing.start()
    first = enricher.start()
    _wait_for(lambda: len(output_records(settings, enricher.prefix)) > 100, 60, lambda: enricher.logs()[-3000:])
    enricher.env_overrides["CDCFLOW_ENRICHER__INSTANCE_ID"] = "two"
    enricher.env_overrides["CDCFLOW_ENRICHER__STATE_DIR"] = str(enricher.state_dir.with_name("store-two"))
    second = enricher.start()  # the group rebalances: the first commits and gives up some partitions

    def second_took() -> bool:
        lines = enricher.log_file(second).read_text().splitlines()
        return any(json.loads(x)["partitions"] for x in lines if '"event": "enricher.assigned"' in x)

    _wait_for(second_took, 60, lambda: enricher.logs()[-3000:])
    assert producing.is_alive(), "the workload ended before the rebalance: nothing was tested mid-stream"
    rebalanced.set()
    producing.join(timeout=120)
    assert not producing.is_alive()
    records = _wait_for_all(settings, enricher, workload)
    assert enricher.terminate(second) == 0
    assert enricher.terminate(first) == 0
    assert '"event": "enricher.revoked"' in enricher.log_file(first).read_text()
    _assert_exactly_once_and_as_of(settings, workload, records)
