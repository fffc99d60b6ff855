from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from structlog.testing import capture_logs

from services.common.contracts import Column, ContractRegistry, TableContract, lake_schema, load_contracts
from services.common.contracts.arrow import LAKE_METADATA, arrow_schema
from services.common.contracts.catalog import column_from_catalog, refused_columns
from services.common.contracts.compat import compare, evolve
from services.common.contracts.errors import ContractError, UnknownTableError
from services.common.contracts.store import (
    ContractReader,
    contract_to_avro,
    contracts_from_lake,
    lake_contract_path,
    publish_contract,
    write_contract,
)
from services.common.debezium.records import Reason
from services.common.lake import LocalLake
from services.consumer.routing import Router

CONTRACT = TableContract(
    schema="lending",
    table="loans",
    primary_key=("loan_id",),
    columns=(
        Column("loan_id", "int64", "bigint", nullable=False),
        Column("amount", "decimal", "numeric(20,2)", nullable=False, precision=20, scale=2),
        Column("wide", "decimal", "numeric(50,10)", precision=50, scale=10),
        Column("rate", "variable_decimal", "numeric"),
        Column("booked_at", "timestamptz", "timestamp with time zone"),
        Column("seen_at", "timestamp", "timestamp without time zone"),
        Column("due", "date", "date"),
        Column("tags", "array", "text[]", items=Column("element", "string", "text")),
        Column("ref", "uuid", "uuid"),
    ),
)


def test_arrow_types_follow_the_contract() -> None:
    schema = arrow_schema(CONTRACT)
    assert schema.field("loan_id").type == pa.int64()
    assert schema.field("amount").type == pa.decimal128(20, 2)
    assert schema.field("wide").type == pa.decimal256(50, 10)
    assert schema.field("rate").type == pa.decimal256(76, 38)  # never a float
    assert schema.field("booked_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("seen_at").type == pa.timestamp("us")
    assert schema.field("due").type == pa.date32()
    assert schema.field("tags").type == pa.list_(pa.string())
    lake = lake_schema(CONTRACT)
    assert lake.names == [*schema.names, *(f.name for f in LAKE_METADATA)]
    assert lake.metadata[b"cdcflow.contract_version"] == b"1"


def test_avro_round_trip_through_files(tmp_path: Path) -> None:
    write_contract(tmp_path, CONTRACT)
    (tmp_path / "not-a-contract.avsc").write_text(json.dumps({"type": "record", "name": "x", "fields": []}))
    assert load_contracts(tmp_path) == [CONTRACT]
    avro = contract_to_avro(CONTRACT)
    amount = next(f for f in avro["fields"] if f["name"] == "amount")
    assert amount["type"] == {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 2}
    booked = next(f for f in avro["fields"] if f["name"] == "booked_at")
    assert booked["type"] == ["null", {"type": "long", "logicalType": "timestamp-micros"}]
    assert booked["default"] is None


def test_uncaptured_columns_survive_the_round_trip_and_change_the_fingerprint(tmp_path: Path) -> None:
    uncaptured = dataclasses.replace(CONTRACT, uncaptured=(("with_tax", "generated"), ("secret", "excluded")))
    write_contract(tmp_path, uncaptured)
    assert load_contracts(tmp_path) == [uncaptured]
    assert contract_to_avro(uncaptured)["cdcflow.uncaptured"] == {"with_tax": "generated", "secret": "excluded"}
    assert "cdcflow.uncaptured" not in contract_to_avro(CONTRACT)  # existing files stay as they are
    assert uncaptured.fingerprint() != CONTRACT.fingerprint()


def test_malformed_contract_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "lending.bad.avsc").write_text("{not json")
    with pytest.raises(ContractError, match=r"lending\.bad\.avsc"):
        load_contracts(tmp_path)


@pytest.mark.parametrize("name", ["../etc", "a.b", "", "x y", "drop;table"])
def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(ContractError):
        replace(CONTRACT, table=name)
    with pytest.raises(ContractError):
        Column(name, "string", "text")


def test_catalog_types_map_to_semantics() -> None:
    numeric_20_2 = (20 << 16 | 2) + 4  # how PostgreSQL encodes the numeric(20,2) type modifier
    assert column_from_catalog("a", "numeric", numeric_20_2, "numeric(20,2)", True).precision == 20
    assert column_from_catalog("a", "numeric", -1, "numeric", True).semantic == "variable_decimal"
    assert column_from_catalog("a", "jsonb", -1, "jsonb", True).semantic == "json"
    assert column_from_catalog("a", "mood", -1, "mood", True).semantic == "string"  # an enum
    assert column_from_catalog("a", "money", -1, "money", True).scale == 2


def test_added_nullable_and_dropped_columns_are_compatible_everything_else_is_not() -> None:
    added = replace(CONTRACT, columns=(*CONTRACT.columns, Column("note", "string", "text")))
    assert [(c.kind, c.compatible) for c in compare(CONTRACT, added)] == [("added", True)]
    assert evolve(CONTRACT, added).version == 2
    assert evolve(CONTRACT, CONTRACT).version == 1

    required = replace(CONTRACT, columns=(*CONTRACT.columns, Column("must", "string", "text", nullable=False)))
    assert [c.kind for c in compare(CONTRACT, required)] == ["added_not_null"]
    dropped = replace(CONTRACT, columns=CONTRACT.columns[:-1])
    assert [(c.kind, c.column, c.compatible) for c in compare(CONTRACT, dropped)] == [("dropped", "ref", True)]
    without_key = replace(CONTRACT, columns=CONTRACT.columns[1:], primary_key=("ref",))
    assert [(c.kind, c.compatible) for c in compare(CONTRACT, without_key)] == [
        ("removed", False),
        ("key_changed", False),
    ]
    retyped = replace(
        CONTRACT,
        columns=tuple(replace(c, precision=22) if c.name == "amount" else c for c in CONTRACT.columns),
    )
    assert [(c.kind, c.column) for c in compare(CONTRACT, retyped)] == [("type_changed", "amount")]


def test_registry_keeps_the_newest_version() -> None:
    registry = ContractRegistry.of([replace(CONTRACT, version=3), CONTRACT])
    assert registry.get("lending", "loans").version == 3
    with pytest.raises(UnknownTableError, match="cdcflow schemas generate"):
        registry.get("lending", "nope")


def test_each_broken_contract_file_is_named_by_its_table_and_the_rest_are_read(tmp_path: Path) -> None:
    directory, lake = tmp_path / "schemas", LocalLake(tmp_path / "lake")
    write_contract(directory, CONTRACT)
    (directory / "lending.accounts.avsc").write_bytes(b'{"type": "record", "na')  # truncated
    (directory / "shop").mkdir()
    (directory / "shop" / "public.users.avsc").write_bytes(b"\xff\xfe not text")
    (directory / "other.avsc").write_text('{"type": "record", "name": "other", "fields": []}')  # not a contract
    publish_contract(lake, replace(CONTRACT, version=2))
    bad_version = lake_contract_path(replace(CONTRACT, version=3))
    lake.write(bad_version, json.dumps({**contract_to_avro(CONTRACT), "fields": "amount"}).encode())

    read = ContractReader(directory, lake).read()

    assert [(c.qualified_name, c.version) for c in read.contracts] == [("lending.loans", 1), ("lending.loans", 2)]
    assert sorted(read.broken) == ["lending.accounts", "lending.loans", "shop/public.users"]
    assert str(directory / "lending.accounts.avsc") in read.broken["lending.accounts"]
    assert bad_version in read.broken["lending.loans"]
    with pytest.raises(ContractError, match="not a valid contract"):
        ContractReader(directory, lake).contracts()
    with pytest.raises(ContractError, match="not a valid contract"):
        load_contracts(directory)


def test_a_contract_reader_reads_again_only_when_a_contract_file_changed(tmp_path: Path) -> None:
    directory, lake = tmp_path / "schemas", LocalLake(tmp_path / "lake")
    write_contract(directory, CONTRACT)
    reader = ContractReader(directory, lake)
    first = reader.contracts()
    assert [(c.qualified_name, c.version) for c in first] == [("lending.loans", 1)]
    assert reader.contracts() is first  # nothing changed: the same contracts, not read again

    evolved = replace(CONTRACT, version=2, columns=(*CONTRACT.columns, Column("note", "string", "text")))
    publish_contract(lake, evolved)  # a writer published a version in the lake
    second = reader.contracts()
    assert [(c.qualified_name, c.version) for c in second] == [("lending.loans", 1), ("lending.loans", 2)]
    assert second[1].column("note").semantic == "string"

    write_contract(directory, replace(CONTRACT, doc="loans booked"))  # the repository's file rewritten
    assert reader.contracts()[0].doc == "loans booked"
    assert reader.contracts() == [
        *load_contracts(directory),
        *contracts_from_lake(lake),
    ]  # what reading everything gives

    (directory / "lending.loans.avsc").unlink()
    assert [c.version for c in reader.contracts()] == [2]


def _live(*, without: tuple[str, ...] = (), extra: tuple[Column, ...] = ()) -> TableContract:
    """The contract PostgreSQL's catalog gives for CONTRACT's table after columns were dropped or added."""
    return replace(CONTRACT, columns=(*(c for c in CONTRACT.columns if c.name not in without), *extra))


def test_a_dropped_column_is_kept_nullable_and_marked_in_every_later_version() -> None:
    evolved = evolve(CONTRACT, _live(without=("amount",)))
    assert (evolved.version, evolved.dropped) == (2, ("amount",))
    assert [c.name for c in evolved.columns] == [c.name for c in CONTRACT.columns]  # the lake keeps its shape
    assert evolved.column("amount") == replace(CONTRACT.column("amount"), nullable=True)
    assert [c.name for c in evolved.live_columns] == [c.name for c in CONTRACT.columns if c.name != "amount"]

    assert compare(evolved, _live(without=("amount",))) == []  # nothing new: the same version
    assert evolve(evolved, _live(without=("amount",))) == evolved

    note = Column("note", "string", "text")
    later = evolve(evolved, _live(without=("amount",), extra=(note,)))
    assert (later.version, later.dropped, later.columns[-1]) == (3, ("amount",), note)


def test_a_renamed_column_is_a_dropped_one_and_an_added_one() -> None:
    renamed = replace(
        CONTRACT, columns=tuple(replace(c, name="due_on") if c.name == "due" else c for c in CONTRACT.columns)
    )
    assert [(c.kind, c.column, c.compatible) for c in compare(CONTRACT, renamed)] == [
        ("dropped", "due", True),
        ("added", "due_on", True),
    ]
    evolved = evolve(CONTRACT, renamed)
    assert (evolved.dropped, [c.name for c in evolved.columns][-2:]) == (("due",), ["ref", "due_on"])


def test_a_dropped_column_captured_again_is_restored_with_its_type_or_refused_with_another() -> None:
    evolved = evolve(CONTRACT, _live(without=("amount",)))
    assert [(c.kind, c.column, c.compatible) for c in compare(evolved, CONTRACT)] == [("restored", "amount", True)]
    restored = evolve(evolved, CONTRACT)
    assert (restored.version, restored.dropped) == (3, ())
    assert restored.column("amount").nullable  # the versions written while it was gone hold NULL

    retyped = replace(
        CONTRACT,
        columns=tuple(
            replace(c, semantic="string", pg_type="text", precision=None, scale=None) if c.name == "amount" else c
            for c in CONTRACT.columns
        ),
    )
    assert [(c.kind, c.compatible) for c in compare(evolved, retyped)] == [("type_changed", False)]


def test_dropped_columns_survive_the_round_trip_and_must_be_non_key_columns(tmp_path: Path) -> None:
    evolved = evolve(CONTRACT, _live(without=("wide", "ref")))
    write_contract(tmp_path, evolved)
    assert load_contracts(tmp_path) == [evolved]
    assert contract_to_avro(evolved)["cdcflow.dropped"] == ["wide", "ref"]
    assert "cdcflow.dropped" not in contract_to_avro(CONTRACT)  # existing files stay as they are
    assert evolved.fingerprint() != replace(evolved, dropped=()).fingerprint()
    with pytest.raises(ContractError, match="dropped column"):
        replace(CONTRACT, dropped=("loan_id",))
    with pytest.raises(ContractError, match="dropped column"):
        replace(CONTRACT, dropped=("nope",))


def _array(name: str, pg_type: str, element: str) -> Column:
    return Column(name, "array", pg_type, items=Column("element", "string", element))


# Columns a contract written before their types were refused (or by hand) may hold: each told by its type names.
STORED_BEFORE_A_REFUSAL = TableContract(
    schema="lending",
    table="schedules",
    primary_key=("schedule_id",),
    columns=(
        Column("schedule_id", "int64", "bigint", nullable=False),
        _array("slots", "time without time zone[]", "time"),
        _array("zoned", "time(3) with time zone[]", "timetz"),
        Column("flags", "string", "bit varying(8)"),
        Column("owner", "string", "name"),
        _array("args", "oidvector", "oid"),
        _array("spans", "interval[]", "interval"),
        _array("stamps", "timestamp(3) without time zone[]", "timestamp"),
        Column("bits", "string", "bit(3)"),
        _array("retired", "time without time zone[]", "time"),
        Column("note", "string", "text"),
    ),
    dropped=("retired",),
)


def test_a_stored_contract_names_each_column_of_a_type_this_release_refuses(tmp_path: Path) -> None:
    write_contract(tmp_path, STORED_BEFORE_A_REFUSAL)
    (stored,) = load_contracts(tmp_path)
    assert refused_columns(stored) == {
        "slots": "an array of time arrives with its microseconds cut to milliseconds and 24:00:00 as 00:00:00",
        "zoned": "an array of timetz arrives with its fractions of a second cut off",
        "flags": "varbit arrives as a bit set in bytes, whose length is lost",
        "owner": "name arrives as NULL",
        "args": "oidvector arrives as an empty array",
        "spans": "an array of interval is not sent at all",
        "bits": "bit arrives as a bit set in bytes (bit(1) as a boolean), not as its bits",
    }  # the dropped column no longer arrives: nothing to refuse
    assert refused_columns(CONTRACT) == {}

    # the remedy: the columns excluded, `schemas generate` writes the next version with them dropped
    live = tuple(c for c in stored.columns if c.name in {"schedule_id", "note"})
    taken = evolve(stored, replace(stored, columns=live, dropped=()))
    assert (taken.version, refused_columns(taken)) == (2, {})


def test_a_table_whose_stored_contract_holds_a_refused_type_goes_to_the_dlq_saying_how_to_take_it() -> None:
    router = Router("cdcflow", ContractRegistry.of([STORED_BEFORE_A_REFUSAL, CONTRACT]), [], 1 << 20)
    with capture_logs() as logs:
        refused = router.route("cdcflow.lending.schedules")
        assert router.route("cdcflow.lending.loans").decoder is not None
    assert (refused.decoder, refused.skip, refused.reason) == (None, False, Reason.SCHEMA_MISMATCH)
    assert refused.detail.startswith("contract lending.schedules v1 captures a type cdcflow refuses (slots: an array")
    assert r"CDCFLOW_WRITER__EXCLUDE_COLUMNS, lending\.schedules\.(slots|zoned|flags|owner|args|spans|bits)" in (
        refused.detail
    )
    assert "cdcflow dlq replay --reason schema_mismatch" in refused.detail
    (logged,) = [e for e in logs if e["event"] == "writer.contract_refused"]
    assert (logged["log_level"], logged["table"], sorted(logged["columns"])) == (
        "error",
        "lending.schedules",
        ["args", "bits", "flags", "owner", "slots", "spans", "zoned"],
    )
