"""The DLQ tool's logic: reading back every form the DLQ publisher writes, counting each original record once,
selecting, naming a plan, parking, pacing.

DLQ records are made by the real publisher (``DlqPublisher`` on librdkafka's built-in mock cluster) and read
back with the tool's own reader, or built as ``confluent_kafka.Message`` objects with the same headers.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from services.common.debezium.records import DecodeFailure, Reason
from services.common.kafka import read_topic
from services.common.replay import REPLAY_COUNT, REPLAYED_FROM, parse_coordinate, replay_topic, replayed_from
from services.common.settings import KafkaSettings
from services.consumer.dlq import DlqPublisher
from services.dlq.progress import Progress, ProgressEntry
from services.dlq.ratelimit import Pacer, batch_size
from services.dlq.records import DlqRecord, ValueOmittedError, inflate
from services.dlq.selection import Filters, identities, parse_offsets, resolve, status_of

GROUP = "unit-dlq-tool"
SOURCE = "cdcflow.lending.transactions"
HOUR_MS = 3_600_000
T0 = int(datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp() * 1000)


def _dlq_record(
    offset: int,
    *,
    dlq: tuple[int, int] | None = None,
    reason: str = Reason.SCHEMA_MISMATCH,
    topic: str = SOURCE,
    partition: int = 2,
    at_ms: int = T0,
    replays: int = 0,
    value: bytes | None = b'{"payload": {"op": "c"}}',
) -> DlqRecord:
    """A DLQ record with the headers the publisher writes; a replayed one (``replays`` > 0) came from the replay
    topic and names its original in ``cdcflow.replayed.from``."""
    headers: list[tuple[str, str | bytes | None]] = [("origin", b"\x00\xff")]
    source = (topic, partition, offset)
    if replays:
        headers += [(REPLAY_COUNT, str(replays)), (REPLAYED_FROM, f"{topic}:{partition}:{offset}")]
        source = (replay_topic(GROUP), partition, 1000 + offset * 10 + replays)
    headers += [
        ("cdcflow.error.class", "DecodeError"),
        ("cdcflow.error.reason", reason),
        ("cdcflow.error.message", "column amount: expected decimal"),
        ("cdcflow.error.stage", "decode"),
        ("cdcflow.error.time", str(at_ms)),
        ("cdcflow.source.topic", source[0]),
        ("cdcflow.source.partition", str(source[1])),
        ("cdcflow.source.offset", str(source[2])),
        ("cdcflow.source.timestamp", str(at_ms - 5)),
        ("cdcflow.worker", "w-1"),
    ]
    where = dlq if dlq is not None else (0, offset * 10 + replays)
    message = Message(
        topic=f"_cdcflow.dlq.{GROUP}",
        partition=where[0],
        offset=where[1],
        key=b'{"id": 1}',
        value=value,
        headers=headers,
        timestamp=(TIMESTAMP_CREATE_TIME, at_ms - 5),
    )
    return DlqRecord.of(message, GROUP)


def _plan(records: list[DlqRecord], filters: Filters | None = None, progress: Progress | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return resolve(GROUP, records, progress or Progress(), filters or Filters(), target="replay", max_replays=3, **kw)  # type: ignore[arg-type]


# --- every form the publisher writes --------------------------------------------------------------------------


def _failure(offset: int, value: bytes) -> DecodeFailure:
    message = Message(
        topic=SOURCE,
        partition=4,
        offset=offset,
        key=b'{"transaction_id":7}',
        value=value,
        headers=[("origin", b"\x00\xff")],
        timestamp=(TIMESTAMP_CREATE_TIME, 1_795_387_781_000 + offset),
    )
    return DecodeFailure(message, Reason.MALFORMED_JSON, "not JSON", "JSONDecodeError")


@pytest.fixture
def published() -> Iterator[tuple[DlqPublisher, KafkaSettings]]:
    """The real publisher on a mock cluster with a 10,000-byte message limit, and settings that reach it."""
    publisher = DlqPublisher(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"),
        GROUP,
        "unit-worker",
        create_topic=False,
        **{"test.mock.num.brokers": 1, "message.max.bytes": 10_000},
    )
    broker = next(iter(publisher._producer.list_topics(timeout=10).brokers.values()))
    yield publisher, KafkaSettings(bootstrap_servers=f"{broker.host}:{broker.port}")
    publisher.close(timeout_s=5)


def test_every_form_the_publisher_writes_reads_back_as_the_original(
    published: tuple[DlqPublisher, KafkaSettings],
) -> None:
    publisher, settings = published
    as_is = b'{"payload": not json}'
    compressible = b'{"reference":"' + b"R" * 50_000 + b'"}'  # over the limit: deflated
    random = os.urandom(50_000)  # does not compress: left out
    for offset, value in ((1, as_is), (2, compressible), (3, random)):
        assert publisher.publish(_failure(offset, value))
    publisher.confirm(SOURCE, 4, timeout_s=30)

    records = {
        r.source[2]: r
        for r in (DlqRecord.of(m, GROUP) for m in read_topic(settings, publisher.topic).messages)
        if r.source
    }
    assert sorted(records) == [1, 2, 3]
    assert records[1].original_value() == as_is
    assert records[2].encoding == "deflate"
    assert records[2].original_value() == compressible  # the deflate round trip
    assert records[3].omitted
    with pytest.raises(ValueOmittedError):
        records[3].original_value()
    assert records[3].matches_omitted(random)
    assert not records[3].matches_omitted(random[:-1])
    for record in records.values():
        assert record.original == (SOURCE, 4, record.source[2] if record.source else -1)
        assert record.reason == Reason.MALFORMED_JSON
        assert record.original_headers() == [("origin", b"\x00\xff")]  # the writer's own headers are gone
        assert record.key == b'{"transaction_id":7}'
        assert record.replay_count == 0


def test_inflate_refuses_what_is_not_the_announced_value() -> None:
    value = b"x" * 1000
    assert inflate(zlib.compress(value), 1000) == value
    with pytest.raises(ValueError, match="header says"):
        inflate(zlib.compress(value), 999)
    with pytest.raises(ValueError, match="not zlib"):
        inflate(b"plain text")


def test_show_decodes_the_debezium_event() -> None:
    shown = _dlq_record(5).describe()
    assert shown["value"] == {"payload": {"op": "c"}}
    assert shown["error"]["reason"] == Reason.SCHEMA_MISMATCH
    assert shown["original"] == f"{SOURCE}:2:5"
    assert shown["headers"]["origin"] == "0xff" or shown["headers"]["origin"].startswith("0x")


# --- one record, however many copies ------------------------------------------------------------------------


def test_a_record_published_twice_is_counted_and_selected_once() -> None:
    first, again = _dlq_record(7, dlq=(3, 40)), _dlq_record(7, dlq=(3, 41))  # a writer killed before its commit
    other = _dlq_record(8, dlq=(3, 42))
    copies = identities([again, first, other])
    assert len(copies) == 2
    plan = _plan([again, first, other])
    assert [i.record.dlq_coordinate for i in plan.items] == [(3, 40), (3, 42)]  # the first copy stands for it
    assert plan.duplicates == 1


def test_a_replayed_record_that_failed_again_is_the_same_record_with_a_higher_count() -> None:
    original, failed_again = _dlq_record(9), _dlq_record(9, replays=1)
    assert failed_again.original == original.original == (SOURCE, 2, 9)
    assert failed_again.source != failed_again.original  # the writer read it from the replay topic
    progress = Progress({(SOURCE, 2, 9): ProgressEntry(replays=1, parked=False, plan="p1", dlq="0:90")})
    assert status_of(identities([original])[(SOURCE, 2, 9)], progress.get((SOURCE, 2, 9))) == "replayed"
    assert status_of(identities([original, failed_again])[(SOURCE, 2, 9)], progress.get((SOURCE, 2, 9))) == "pending"
    (item,) = _plan([original, failed_again], progress=progress).items
    assert item.record is failed_again
    assert item.action == "replay"


def test_a_record_replayed_max_times_is_parked_not_replayed() -> None:
    records = [_dlq_record(1, replays=2), _dlq_record(2, replays=3), _dlq_record(3, replays=5)]
    plan = _plan(records)
    assert {i.original[2]: i.action for i in plan.items} == {1: "replay", 2: "park", 3: "park"}
    parked = Progress({(SOURCE, 2, 2): ProgressEntry(replays=3, parked=True, plan="x", dlq="0:23")})
    assert status_of(identities(records)[(SOURCE, 2, 2)], parked.get((SOURCE, 2, 2))) == "parked"
    assert [i.original[2] for i in _plan(records, progress=parked).items] == [1, 3]  # parked once is parked


# --- selection and plan ids ---------------------------------------------------------------------------------


def test_filters_select_by_reason_table_time_offsets_and_limit() -> None:
    records = [
        _dlq_record(1, reason=Reason.SCHEMA_MISMATCH, at_ms=T0),
        _dlq_record(2, reason=Reason.MALFORMED_JSON, at_ms=T0 + HOUR_MS),
        _dlq_record(3, reason=Reason.SCHEMA_MISMATCH, topic="cdcflow.lending.customers", at_ms=T0 + 2 * HOUR_MS),
        _dlq_record(4, reason=Reason.SCHEMA_MISMATCH, at_ms=T0 + 3 * HOUR_MS),
    ]

    def chosen(filters: Filters) -> list[int]:
        return [i.original[2] for i in _plan(records, filters).items]

    assert chosen(Filters()) == [3, 1, 2, 4]  # original order: topic, partition, offset
    assert chosen(Filters(reasons=(Reason.SCHEMA_MISMATCH,))) == [3, 1, 4]
    assert chosen(Filters(tables=("lending.transactions",))) == [1, 2, 4]
    assert chosen(Filters(since_ms=T0 + HOUR_MS, until_ms=T0 + 3 * HOUR_MS)) == [3, 2]
    assert chosen(Filters(offsets=tuple(parse_offsets("0:10-20")))) == [1, 2]
    assert chosen(Filters(offsets=tuple(parse_offsets(f"0:40,{SOURCE}:2:2")))) == [2, 4]
    assert chosen(Filters(reasons=(Reason.SCHEMA_MISMATCH,), limit=2)) == [3, 1]
    assert records[2].table() == "lending.customers"
    assert records[1].hour() == "2026-11-23T11"


def test_offsets_that_are_not_coordinates_are_refused() -> None:
    for bad in ("x", "1:", "1:5-2", "a:b"):
        with pytest.raises(ValueError, match=r"P:O|ends before"):
            parse_offsets(bad)


def test_the_plan_id_names_exactly_the_selection() -> None:
    records = [_dlq_record(o, reason=Reason.SCHEMA_MISMATCH) for o in range(5)]
    filters = Filters(reasons=(Reason.SCHEMA_MISMATCH,))
    plan_id = _plan(records, filters).plan_id
    assert _plan(list(reversed(records)), filters).plan_id == plan_id  # read in another order: the same plan
    unrelated = _dlq_record(9, reason=Reason.MALFORMED_JSON)
    assert _plan([*records, unrelated], filters).plan_id == plan_id  # a record it does not select changes nothing
    assert _plan([*records, _dlq_record(7)], filters).plan_id != plan_id  # a new matching record does
    assert _plan(records[:-1], filters).plan_id != plan_id  # so does a purged one
    assert _plan(records, Filters(reasons=(Reason.SCHEMA_MISMATCH,), limit=5)).plan_id != plan_id
    assert resolve(GROUP, records, Progress(), filters, target="source", max_replays=3).plan_id != plan_id
    assert resolve(GROUP, records, Progress(), filters, target="replay", max_replays=4).plan_id != plan_id


def test_a_plan_interrupted_part_way_resolves_to_the_same_id_and_to_what_is_left() -> None:
    records = [_dlq_record(o) for o in range(4)]
    plan = _plan(records)
    done = Progress(
        {
            i.original: ProgressEntry(1, False, plan.plan_id, f"{i.record.dlq_partition}:{i.record.dlq_offset}")
            for i in plan.items[:2]
        }
    )
    resumed = _plan(records, progress=done, for_plan=plan.plan_id)
    assert resumed.plan_id == plan.plan_id
    assert [i.original[2] for i in resumed.todo()] == [2, 3]
    # the same progress left by another plan: those records are no longer selected, and the id differs
    other = _plan(records, progress=done)
    assert [i.original[2] for i in other.items] == [2, 3]
    assert other.plan_id != plan.plan_id


def test_progress_entries_round_trip_and_the_last_one_wins() -> None:
    key = Progress.key((SOURCE, 2, 9))
    first = ProgressEntry(1, False, "p", "0:1", target="t")
    second = ProgressEntry(2, False, "q", "0:5", target="t")
    messages = [
        Message(topic="x", partition=0, offset=0, key=key, value=first.encode()),
        Message(topic="x", partition=0, offset=1, key=b"garbage", value=b"{}"),
        Message(topic="x", partition=0, offset=2, key=key, value=second.encode()),
    ]
    assert Progress.of(messages).entries == {(SOURCE, 2, 9): second}


def test_replay_headers_name_the_original_coordinates() -> None:
    headers: list[tuple[str, str | bytes | None]] = [(REPLAYED_FROM, b"cdcflow.lending.loans:3:120"), ("x", None)]
    assert replayed_from(headers) == ("cdcflow.lending.loans", 3, 120)
    assert replayed_from([(REPLAYED_FROM, b"nonsense")]) is None
    assert parse_coordinate("a.b.c:1:2") == ("a.b.c", 1, 2)
    assert parse_coordinate("a.b.c:1") is None


# --- pacing -------------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_pacer_never_runs_ahead_of_the_rate() -> None:
    clock = _Clock()
    pacer = Pacer(100.0, clock=clock, sleep=clock.sleep)
    size = batch_size(100.0)
    assert size == 20  # five transactions a second
    sent = 0
    for _ in range(50):
        pacer.take(size)
        sent += size
        # every batch may go only once the ones before it had their time: at most one batch ahead of 100/s
        assert sent <= 100.0 * (clock.now - 100.0) + size
    assert clock.now - 100.0 == pytest.approx((50 - 1) * size / 100.0)
    assert Pacer(None).take(10**6) == 0.0
    assert batch_size(None) == 500
    assert batch_size(0.5) == 1
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)


def test_digest_of_an_omitted_value_is_checked() -> None:
    value = b"v" * 10
    record = _dlq_record(1, value=b"")
    assert record.matches_omitted(value)  # no digest header: anything the source holds there
    headers = [
        *record.headers,
        ("cdcflow.value.omitted", "true"),
        ("cdcflow.value.sha256", hashlib.sha256(value).hexdigest()),
    ]
    omitted = DlqRecord.of(
        Message(
            topic="t",
            partition=0,
            offset=0,
            key=None,
            value=b"",
            headers=headers,
            timestamp=(TIMESTAMP_CREATE_TIME, T0),
        ),
        GROUP,
    )
    assert omitted.omitted
    assert omitted.matches_omitted(value)
    assert not omitted.matches_omitted(b"other")


def test_kafka_out_of_reach_is_a_named_error_not_a_traceback() -> None:
    from services.common.settings import DlqSettings
    from services.dlq.app import DlqTool
    from services.dlq.errors import KafkaFailedError

    tool = DlqTool(KafkaSettings(bootstrap_servers="127.0.0.1:9"), DlqSettings(timeout_s=0.5), GROUP)
    with pytest.raises(KafkaFailedError, match="listing the DLQ topics"):
        tool.groups()


@pytest.mark.parametrize("to_source", [False, True])
def test_the_enrichers_dlq_is_not_replayed_anywhere(to_source: bool) -> None:
    """Only the lake writer reads a replay topic: a replay of the enricher's DLQ would mark its records replayed
    (and a purge would then take them as done) while nothing read them. Refused before Kafka is asked."""
    from services.common.settings import load_settings
    from services.dlq.errors import DlqToolError
    from services.dlq.wiring import open_tool

    settings = load_settings({"CDCFLOW_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "CDCFLOW_DLQ__TIMEOUT_S": "0.5"})
    tool = open_tool(settings, settings.enricher.group_id)
    with pytest.raises(DlqToolError, match="the enricher's: no replay of its DLQ reaches it"):
        tool.plan(Filters(), to_source=to_source, max_replays=3)


def _with_headers(**changed: str) -> DlqRecord:
    """A DLQ record as :func:`_dlq_record` makes it, with some headers (``cdcflow_source_offset`` …) replaced."""
    names = {name.replace("_", "."): value for name, value in changed.items()}
    base = _dlq_record(5)
    headers = [(k, names.get(k, v)) for k, v in base.headers]
    message = Message(
        topic=f"_cdcflow.dlq.{GROUP}",
        partition=0,
        offset=50,
        key=base.key,
        value=base.value,
        headers=headers,
        timestamp=(TIMESTAMP_CREATE_TIME, T0),
    )
    return DlqRecord.of(message, GROUP)


@pytest.mark.parametrize(
    "garbled",
    [
        {"cdcflow_source_offset": "-5"},
        {"cdcflow_source_partition": "-1"},
        {"cdcflow_source_offset": "٣"},  # a digit to str.isdigit, not to a coordinate's reader
        {"cdcflow_source_topic": ""},
        {"cdcflow_source_topic": "a:b"},
        {"cdcflow_source_topic": "x" * 250},
    ],
)
def test_source_headers_that_name_no_coordinate_leave_the_record_unidentified(garbled: dict[str, str]) -> None:
    """Only a coordinate that reads back from the replay progress identifies a record: one that does not would
    be selected again at every replay."""
    record = _with_headers(**garbled)
    assert (record.source, record.original) == (None, None)
    assert _plan([record, _dlq_record(6)]).items[0].original == (SOURCE, 2, 6)
    assert len(_plan([record]).items) == 0


@pytest.mark.parametrize("error_time", ["99999999999999999999", "-1", "253402300800000", "1.5e12"])
def test_an_error_time_no_date_holds_falls_back_to_the_records_timestamp(error_time: str) -> None:
    record = _with_headers(cdcflow_error_time=error_time)
    assert record.error_time_ms == T0
    assert record.hour() == "2026-11-23T10"
    assert record.describe()["error"]["time"].startswith("2026-11-23T10:00")
