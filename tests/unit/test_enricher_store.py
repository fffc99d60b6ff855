"""The enricher's LMDB table store: as-of lookups, bounded versions, rows and offsets committed together."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from services.enricher.errors import StoreError
from services.enricher.events import TableChange, TableTruncate
from services.enricher.store import EXPIRED, Position, TableStore, Version


def _store(path: Path, max_versions: int = 8) -> TableStore:
    return TableStore(path, map_size=16 << 20, max_versions=max_versions)


def _customer(key: str, lsn: int, status: str = "ACTIVE", *, deleted: bool = False) -> TableChange:
    attributes = {} if deleted else {"customer_type": "SME", "status": status}
    return TableChange("customers", key, lsn, 1_000 + lsn, deleted, attributes)


def test_versions_arriving_out_of_order_are_found_by_lsn(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    store.apply([_customer("7", 30, "SUSPENDED"), _customer("7", 10, "ACTIVE"), _customer("7", 20, "INACTIVE")], {})
    found = store.as_of("customers", "7", 25)
    assert found == Version(20, 1_020, False, {"customer_type": "SME", "status": "INACTIVE"})
    assert store.as_of("customers", "7", 30) == Version(
        30, 1_030, False, {"customer_type": "SME", "status": "SUSPENDED"}
    )
    assert store.as_of("customers", "7", 10_000).lsn == 30  # type: ignore[union-attr]
    assert store.as_of("customers", "7", 9) is None
    assert store.as_of("customers", "8", 100) is None
    assert store.as_of("facilities", "7", 100) is None


def test_a_delete_is_a_version_and_reading_twice_stores_once(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    assert store.apply([_customer("1", 5), _customer("1", 9, deleted=True)], {}) == {"customers": 2}
    assert store.apply([_customer("1", 5), _customer("1", 9, deleted=True)], {}) == {"customers": 0}
    assert store.as_of("customers", "1", 9) == Version(9, 1_009, True, {})
    assert store.as_of("customers", "1", 8).deleted is False  # type: ignore[union-attr]


def test_only_the_newest_versions_are_kept_and_older_asks_are_expired(tmp_path: Path) -> None:
    store = _store(tmp_path / "s", max_versions=2)
    store.apply([_customer("1", lsn) for lsn in (10, 20, 30, 40)], {})
    assert store.as_of("customers", "1", 35).lsn == 30  # type: ignore[union-attr]
    assert store.as_of("customers", "1", 25) is EXPIRED  # 20 was dropped: the store cannot say
    store.apply([_customer("1", 15)], {})  # older than what was dropped: not taken back in
    assert store.as_of("customers", "1", 25) is EXPIRED


def test_a_truncate_deletes_every_row_written_before_it_until_one_is_inserted_again(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    truncate = TableTruncate("customers", 50, 1_050)
    # customer 3's version (LSN 30) is read after the truncate, from a partition read later
    assert store.apply([_customer("1", 10), _customer("2", 20), truncate, _customer("1", 70, "SUSPENDED")], {}) == {
        "customers": 4
    }
    store.apply([_customer("3", 30), TableChange("facilities", "1", 5, 1_005, False, {"status": "ACTIVE"})], {})
    assert store.apply([truncate], {}) == {"customers": 0}  # read again: stored once
    gone = Version(50, 1_050, True, {})
    for reopened in (False, True):
        if reopened:
            store.close()
            store = _store(tmp_path / "s")
        assert store.as_of("customers", "1", 49).lsn == 10  # type: ignore[union-attr]
        assert store.as_of("customers", "1", 50) == gone
        assert store.as_of("customers", "1", 69) == gone
        assert store.as_of("customers", "1", 70).attributes["status"] == "SUSPENDED"  # type: ignore[union-attr]
        assert store.as_of("customers", "2", 1_000) == gone
        assert store.as_of("customers", "3", 40).lsn == 30  # type: ignore[union-attr]
        assert store.as_of("customers", "3", 60) == gone
        assert store.as_of("customers", "4", 60) is None  # never known: missing, not deleted
        assert store.as_of("facilities", "1", 60).deleted is False  # type: ignore[union-attr]


def test_a_truncate_after_the_versions_dropped_still_answers(tmp_path: Path) -> None:
    store = _store(tmp_path / "s", max_versions=2)
    store.apply([_customer("1", lsn) for lsn in (10, 20, 30)], {})  # 10 dropped
    assert store.as_of("customers", "1", 17) is EXPIRED
    store.apply([TableTruncate("customers", 15, 1_015)], {})
    assert store.as_of("customers", "1", 17) == Version(15, 1_015, True, {})  # whatever 10 was, 15 deleted it
    assert store.as_of("customers", "1", 12) is EXPIRED
    assert store.as_of("customers", "1", 25).lsn == 20  # type: ignore[union-attr]


def test_decimals_are_kept_exactly_as_text(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    store.apply(
        [TableChange("facilities", "3", 1, 1, False, {"status": "ACTIVE", "interest_rate": Decimal("13.30")})], {}
    )
    assert store.as_of("facilities", "3", 1).attributes == {"status": "ACTIVE", "interest_rate": "13.30"}  # type: ignore[union-attr]


def test_rows_and_offsets_commit_together_or_not_at_all(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    store.apply([_customer("1", 10)], {("t.customers", 0): Position(5, 10)})
    bad = TableChange("customers", "2", 11, 11, False, {"status": object()})  # cannot be stored
    with pytest.raises(TypeError):
        store.apply([_customer("1", 11), bad], {("t.customers", 0): Position(7, 11)})
    assert store.positions() == {("t.customers", 0): Position(5, 10)}
    assert store.as_of("customers", "1", 11).lsn == 10  # type: ignore[union-attr]
    store.close()
    reopened = _store(tmp_path / "s")
    assert reopened.positions() == {("t.customers", 0): Position(5, 10)}


def test_a_wiped_store_starts_empty(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    store.apply([_customer("1", 10)], {("t.customers", 3): Position(1, 10)})
    store.close()
    shutil.rmtree(tmp_path / "s")
    again = _store(tmp_path / "s")
    assert again.positions() == {}
    assert again.as_of("customers", "1", 10) is None


def test_a_store_that_cannot_be_opened_says_where(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="file"):
        _store(tmp_path / "file" / "s")
