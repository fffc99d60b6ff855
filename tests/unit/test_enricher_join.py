"""The enricher's join rule, hold queue and decoding, without Kafka."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.enricher.events import (
    Rejected,
    TableChange,
    TableTruncate,
    TransactionChange,
    decode_table_change,
    decode_transaction,
)
from services.enricher.join import HoldQueue, Released, encode, enriched_value, join_side
from services.enricher.store import TableStore, Version


def _event(op: str, lsn: int, row: dict[str, Any], *, table: str = "transactions") -> bytes:
    image = {"before": row if op == "d" else None, "after": None if op == "d" else row}
    source = {"connector": "postgresql", "table": table, "lsn": lsn, "ts_ms": 1_700_000_000_000 + lsn, "txId": lsn}
    return json.dumps({**image, "source": source, "op": op, "ts_ms": 1}).encode()


def _tx(
    offset: int, lsn: int, *, partition: int = 0, customer: int | None = 1, facility: int | None = 2
) -> TransactionChange:
    row = {"transaction_id": offset, "customer_id": customer, "facility_id": facility, "amount": 1}
    change = decode_transaction("p.lending.transactions", partition, offset, b"k", _event("c", lsn, row))
    assert isinstance(change, TransactionChange)
    return change


def test_a_transaction_decodes_with_exact_amounts_and_its_coordinates() -> None:
    raw = (
        b'{"before":null,"after":{"transaction_id":9,"customer_id":4,"facility_id":null,"amount":14790.60},'
        b'"source":{"lsn":137952288,"ts_ms":1796206394149,"txId":33591},"op":"c"}'
    )
    change = decode_transaction("t", 3, 41, b"{}", raw)
    assert isinstance(change, TransactionChange)
    assert (change.partition, change.offset, change.lsn, change.tx_id) == (3, 41, 137952288, 33591)
    assert change.customer_key == "4"
    assert change.facility_key is None
    record = enriched_value(
        Released(change, "watermark"),
        join_side(lambda *_: None, "customers", "4", 1),
        join_side(lambda *_: None, "facilities", None, 1),
    )
    assert (record["op"], record["source"]["lsn"], record["source"]["txId"]) == ("c", 137952288, 33591)
    assert record["before"] is None
    assert record["after"]["amount"] == "14790.60"
    assert (record["after"]["customer_join"], record["after"]["facility_join"]) == ("missing", "none")


def test_a_delete_carries_its_before_image() -> None:
    change = decode_transaction("t", 0, 1, None, _event("d", 5, {"transaction_id": 3, "customer_id": 1}))
    assert isinstance(change, TransactionChange)
    assert change.op == "d"
    assert change.row["transaction_id"] == 3


def test_text_and_big_numbers_come_out_as_they_went_in() -> None:
    """Integers of any size stay integers, fractions keep their digits, text is UTF-8 JSON either way."""
    raw = (
        '{"op":"u","source":{"lsn":7,"ts_ms":1},"after":{"transaction_id":123456789012345678901234567890,'
        '"amount":-0.000000000000000000012345678901234567890,"rate":1e-30,'
        '"reference":"Zoë \\u00e9 \\ud83d\\ude00 \\"q\\""}}'
    ).encode()
    change = decode_transaction("t", 0, 0, None, raw)
    assert isinstance(change, TransactionChange)
    assert change.row["transaction_id"] == 123456789012345678901234567890
    assert (change.row["amount"], change.row["rate"]) == ("-0.000000000000000000012345678901234567890", "1e-30")
    assert change.row["reference"] == 'Zoë é \U0001f600 "q"'
    none = join_side(lambda *_: None, "customers", None, 7)
    after = json.loads(encode(enriched_value(Released(change, "watermark"), none, none)))["after"]
    assert {name: after[name] for name in change.row} == change.row


def test_an_envelope_with_its_schema_decodes_as_the_bare_one() -> None:
    bare = _event("u", 42, {"transaction_id": 5, "customer_id": 1, "amount": 1.25})
    wrapped = b'{"schema":{"type":"struct"},"payload":' + bare + b"}"
    assert decode_transaction("t", 0, 0, None, wrapped) == decode_transaction("t", 0, 0, None, bare)
    change = decode_transaction("t", 0, 0, None, bare)
    assert isinstance(change, TransactionChange)
    assert (change.op, change.lsn, change.tx_id, change.row["amount"]) == ("u", 42, 42, "1.25")


def test_records_that_cannot_be_used_are_rejected_with_a_reason() -> None:
    cases = {
        None: "tombstone",
        b"{not json": "not_json",
        b'{"op":"c","source":{"lsn":1,"ts_ms":1},"after":{"transaction_id":1,"r":"\\ud800"}}': "not_json",
        b'{"op":"c","source":{"lsn":1,"ts_ms":1},"after":{"transaction_id":1,"r":"\xff"}}': "not_json",
        b"[1]": "not_an_envelope",
        b'{"op":"x","source":{"lsn":1,"ts_ms":1},"after":{}}': "bad_op",
        b'{"op":"c","after":{"transaction_id":1}}': "no_source",
        b'{"op":"c","source":"x","after":{"transaction_id":1}}': "no_source",
        b'{"schema":{},"payload":[1]}': "not_an_envelope",
        b'{"op":"c","source":{"ts_ms":1},"after":{"transaction_id":1}}': "no_lsn",
        b'{"op":"c","source":{"lsn":1,"ts_ms":1},"after":null}': "no_row_image",
        b'{"op":"c","source":{"lsn":1,"ts_ms":1},"after":{"amount":1}}': "no_key",
    }
    for value, reason in cases.items():
        found = decode_transaction("t", 0, 0, None, value)
        assert isinstance(found, Rejected), value
        assert found.reason == reason, value


def test_the_join_takes_the_version_at_or_before_the_transactions_lsn(tmp_path: Path) -> None:
    store = TableStore(tmp_path / "s", map_size=16 << 20, max_versions=8)
    for lsn, status in ((300, "SUSPENDED"), (100, "ACTIVE")):  # the later version arrives first
        change = decode_table_change(
            "customers", "customer_id", _event("u", lsn, {"customer_id": 1, "status": status, "customer_type": "SME"})
        )
        assert isinstance(change, TableChange)
        store.apply([change], {})
    before = join_side(store.as_of, "customers", "1", 200)
    assert (before.state, before.lsn, before.attributes["status"]) == ("joined", 100, "ACTIVE")
    after = join_side(store.as_of, "customers", "1", 300)
    assert (after.state, after.attributes["status"]) == ("joined", "SUSPENDED")
    assert join_side(store.as_of, "customers", "1", 99).state == "missing"
    deleted = decode_table_change("customers", "customer_id", _event("d", 400, {"customer_id": 1}))
    assert isinstance(deleted, TableChange)
    store.apply([deleted], {})
    assert join_side(store.as_of, "customers", "1", 500).state == "deleted"


def test_a_truncated_table_side_joins_as_deleted_from_the_truncate_on(tmp_path: Path) -> None:
    store = TableStore(tmp_path / "s", map_size=16 << 20, max_versions=8)
    row = {"customer_id": 1, "status": "ACTIVE", "customer_type": "SME"}
    truncate = b'{"before":null,"after":null,"source":{"lsn":200,"ts_ms":1700000000200},"op":"t","ts_ms":1}'
    changes = [decode_table_change("customers", "customer_id", v) for v in (_event("c", 100, row), truncate)]
    assert changes[1] == TableTruncate("customers", 200, 1_700_000_000_200)
    store.apply(changes, {})  # type: ignore[arg-type]
    assert join_side(store.as_of, "customers", "1", 150).state == "joined"
    truncated = join_side(store.as_of, "customers", "1", 250)
    assert (truncated.state, truncated.lsn, truncated.committed_at_ms) == ("deleted", 200, 1_700_000_000_200)


def test_held_changes_leave_when_the_watermark_passes_them_in_offset_order() -> None:
    queue = HoldQueue(max_wait_s=10)
    for offset, lsn in ((0, 100), (1, 300), (2, 200)):
        queue.add(_tx(offset, lsn), now=0)
    queue.add(_tx(0, 150, partition=1), now=0)
    assert [r.change.offset for r in queue.release(watermark=99, now=1)] == []
    assert queue.first_offsets() == {("p.lending.transactions", 0): 0, ("p.lending.transactions", 1): 0}
    released = list(queue.release(watermark=250, now=1))
    # offset 2 (LSN 200) is behind offset 1 (LSN 300) in its partition: it waits for it
    assert [(r.change.partition, r.change.offset, r.released_by) for r in released] == [
        (0, 0, "watermark"),
        (1, 0, "watermark"),
    ]
    assert queue.first_offsets() == {("p.lending.transactions", 0): 1}
    assert [r.change.offset for r in queue.release(watermark=300, now=1)] == [1, 2]
    assert len(queue) == 0


def test_a_change_waits_at_most_the_bound_and_is_then_released_as_late() -> None:
    queue = HoldQueue(max_wait_s=5)
    queue.add(_tx(0, 100), now=0)
    queue.add(_tx(1, 101), now=3)
    assert list(queue.release(watermark=0, now=4.9)) == []
    late = list(queue.release(watermark=0, now=5))
    assert [(r.change.offset, r.released_by) for r in late] == [(0, "timeout")]
    assert [r.change.offset for r in queue.release(watermark=0, now=8)] == [1]


def test_forgetting_partitions_drops_only_theirs() -> None:
    queue = HoldQueue(max_wait_s=5)
    queue.add(_tx(0, 1, partition=0), now=0)
    queue.add(_tx(0, 1, partition=1), now=0)
    queue.forget({("p.lending.transactions", 0)})
    assert queue.first_offsets() == {("p.lending.transactions", 1): 0}
    queue.forget()
    assert len(queue) == 0


def test_hostile_records_are_rejected_or_kept_storable_never_raised(tmp_path: Path) -> None:
    """What once stopped the enricher at every start: JSON nested past the decoder's recursion limit, and
    numbers the table store cannot hold. Each is a record with a reason, or a change the store keeps."""
    deep = (
        b'{"op":"c","source":{"lsn":1,"ts_ms":1},"after":{"transaction_id":1,"x":' + b"[" * 5_000 + b"]" * 5_000 + b"}}"
    )
    for decode in (
        lambda v: decode_transaction("t", 0, 0, None, v),
        lambda v: decode_table_change("customers", "customer_id", v),
    ):
        found = decode(deep)
        assert isinstance(found, Rejected)
        assert found.reason == "too_deep"
    huge = 2**64
    assert decode_table_change("customers", "customer_id", _event("c", huge, {"customer_id": 1})) == Rejected(
        "no_lsn", f"source.lsn is {huge}, not a WAL position"
    )
    assert isinstance(decode_transaction("t", 0, 0, None, _event("c", huge, {"transaction_id": 1})), Rejected)
    nested = decode_table_change("customers", "customer_id", _event("u", 5, {"customer_id": 1, "status": {"a": 1}}))
    assert isinstance(nested, Rejected)
    assert nested.reason == "bad_attribute"

    wide = decode_table_change("facilities", "facility_id", _event("u", 5, {"facility_id": 2, "interest_rate": huge}))
    assert isinstance(wide, TableChange)
    assert wide.attributes["interest_rate"] == str(huge)
    store = TableStore(tmp_path / "store", map_size=1 << 24, max_versions=4)
    try:
        store.apply([wide], {})
        version = store.as_of("facilities", "2", 5)
        assert isinstance(version, Version)
        assert version.attributes == {"status": None, "interest_rate": str(huge)}
    finally:
        store.close()
