"""Warehouse names across sources: today's single-source names kept, every name unique and valid."""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from pydantic import ValidationError

from services.common.contracts import Column, ContractRegistry, TableContract, load_contracts, write_contract
from services.common.contracts.errors import ContractError
from services.common.contracts.store import (
    avro_to_contract,
    contract_to_avro,
    contracts_from_lake,
    lake_contract_path,
    publish_contract,
)
from services.common.lake.local import LocalLake
from services.common.naming import (
    MAX_NAME,
    PRIMARY,
    bronze_name,
    is_plain,
    label,
    silver_name,
    source_of,
)
from services.common.settings import KafkaSettings
from services.consumer.routing import Router
from services.transform import silver
from services.transform.errors import SilverGenerationError
from services.warehouse.bronze import bronze_table

_VALID = re.compile(rf"[a-z0-9_]{{1,{MAX_NAME}}}")  # a BigQuery table name; DuckDB's quoted identifiers take any


def _contract(schema: str, table: str, source: str = PRIMARY) -> TableContract:
    return TableContract(schema, table, (Column("id", "int64", "bigint", nullable=False),), ("id",), source=source)


def test_the_primary_sources_plain_names_are_unchanged() -> None:
    assert bronze_name(PRIMARY, "lending", "customers") == "lending__customers"
    assert bronze_name(PRIMARY, "public", "loan_events") == "public__loan_events"
    assert silver_name(PRIMARY, "loan_events") == "loan_events"
    assert bronze_table(_contract("lending", "customers")) == "lending__customers"
    assert silver.model_name(_contract("lending", "customers")) == "customers"


def test_another_source_is_prefixed_and_two_public_users_differ() -> None:
    assert bronze_name("shop", "public", "users") == "shop__public__users"
    assert silver_name("shop", "users") == "shop__users"
    names = {bronze_table(_contract("public", "users", s)) for s in (PRIMARY, "shop", "crm")}
    assert names == {"public__users", "shop__public__users", "crm__public__users"}
    models = {silver.model_name(_contract("public", "users", s)) for s in (PRIMARY, "shop", "crm")}
    assert models == {"users", "shop__users", "crm__users"}


def test_names_with_double_underscores_no_longer_meet() -> None:
    """Before, ``a__b.c`` and ``a.b__c`` were both bronze ``a__b__c``."""
    first, second = bronze_name(PRIMARY, "a__b", "c"), bronze_name(PRIMARY, "a", "b__c")
    assert first != second
    assert first.startswith("a__b__c__h")
    assert second.startswith("a__b__c__h")
    assert "a__b__c" not in {first, second}


@pytest.mark.parametrize("prefix", ["my-shop", "eu.shop", "Shop", "_shop", "shop_", "sh__op"])
def test_a_prefix_that_is_no_plain_name_part_is_labelled_and_hashed(prefix: str) -> None:
    assert not is_plain(prefix)
    name = bronze_name(prefix, "public", "users")
    assert _VALID.fullmatch(name)
    assert name.startswith(label(prefix) + "__public__users__h")
    if label(prefix) != prefix:  # a source named like the label is another source, with another name
        assert name != bronze_name(label(prefix), "public", "users")


def test_a_label_is_lower_case_with_underscores() -> None:
    assert [label(p) for p in ("my-shop", "eu.shop", "Shop", "a$b")] == ["my_shop", "eu_shop", "shop", "a_b"]


def test_a_hashed_name_cannot_pose_as_a_plain_one() -> None:
    """A table named like a hash suffix is hashed itself, so that no plain name ends like a hashed one."""
    hashed = bronze_name(PRIMARY, "x$y", "users")  # labelled x_y: the parts look plain, the digest differs
    schema, table, suffix = hashed.split("__")
    assert (schema, table) == ("x_y", "users")
    assert bronze_name(schema, table, suffix) != hashed  # source x_y, schema users, table h<digest>


def test_upper_case_is_hashed_because_duckdb_ignores_case() -> None:
    assert bronze_name(PRIMARY, "public", "Users").lower() != bronze_name(PRIMARY, "public", "users")
    assert silver_name(PRIMARY, "Users") != silver_name(PRIMARY, "users")


def test_source_of_a_topic_prefix() -> None:
    assert source_of("cdcflow", "cdcflow") == PRIMARY
    assert source_of("shop", "cdcflow") == "shop"


_HOSTILE = ["_", "__", "___", "a", "b", "h", "_a", "a_", "a__", "__a", "a_b", "a__b", "A", "$", "a$", "-", ".", "x"]
_HEX = "0123456789abcdef"


def _part(rng: random.Random, alphabet: str) -> str:
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(_HOSTILE)
    if roll < 0.45:
        return "h" + "".join(rng.choice(_HEX) for _ in range(12))  # shaped like a hash suffix
    if roll < 0.5:
        return rng.choice(string.ascii_lowercase) * rng.choice([254, 255, 256, 600])  # around the length limit
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))


def _tuples(count: int) -> set[tuple[str, str, str]]:
    rng = random.Random(20)
    found: set[tuple[str, str, str]] = set()
    while len(found) < count:
        source = "" if rng.random() < 0.3 else _part(rng, "ab_-.Z0h")
        found.add((source, _part(rng, "ab_$Z1h"), _part(rng, "ab_$Z1h")))
    return found


def test_bronze_names_are_injective_and_valid_over_hostile_parts() -> None:
    tuples = sorted(_tuples(20_000))
    names = [bronze_name(*t) for t in tuples]
    assert all(_VALID.fullmatch(n) for n in names), [n for n in names if not _VALID.fullmatch(n)][:5]
    assert len(set(names)) == len(tuples)  # all lower case already, so unique regardless of case too
    # and DuckDB, which matches names without regard to case, takes every one as its own table
    with duckdb.connect() as conn:
        for name in names[:2_000]:
            conn.execute(f'create table "{name}" (id int)')  # the backends quote every name
        (count,) = conn.execute("select count(*) from duckdb_tables()").fetchone() or (0,)
    assert count == 2_000


def test_silver_names_are_injective_and_valid_over_hostile_parts() -> None:
    pairs = sorted({(source, table) for source, _, table in _tuples(20_000)})
    names = [silver_name(*p) for p in pairs]
    assert all(_VALID.fullmatch(n) for n in names)
    assert len(set(names)) == len(pairs)


def test_produced_silver_names_are_injective_over_their_parts() -> None:
    """A produced table's silver name is that of the parts ``(P?, schema, table)``: distinct parts, distinct
    names. The parts of a primary produced table are those of another source's table whose prefix is the
    schema; that one meeting is refused by silver generation (the next test)."""
    triples = sorted(_tuples(20_000))
    named: dict[str, set[tuple[str, ...]]] = {}
    for source, schema, table in triples:
        for produced_in, given in ((None, (source, table)), (schema, (source, schema, table))):
            parts = tuple(p for p in given if p)  # the primary source's "" is no part
            name = silver_name(source, table, produced_in=produced_in)
            assert _VALID.fullmatch(name), name
            named.setdefault(name, set()).add(parts)
    assert [n for n, parts in named.items() if len(parts) > 1] == []


def test_a_produced_table_keeps_its_schema_in_silver() -> None:
    enriched = replace(_contract("enriched", "transactions"), produced_by="cdcflow enrich")
    assert silver_name(PRIMARY, "transactions", produced_in="enriched") == "enriched__transactions"
    assert silver.model_name(enriched) == "enriched__transactions"
    assert silver.model_name(replace(enriched, source="shop")) == "shop__enriched__transactions"
    assert bronze_table(enriched) == "enriched__transactions"  # bronze names keep every schema already
    files = silver.render([_contract("lending", "transactions"), enriched])
    assert {"models/silver/transactions.sql", "models/silver/enriched__transactions.sql"} <= set(files)
    assert '"source": "enriched__transactions"' in files["models/silver/enriched__transactions.sql"]
    assert avro_to_contract(contract_to_avro(enriched)) == enriched
    assert "cdcflow.produced_by" not in contract_to_avro(_contract("lending", "transactions"))
    with pytest.raises(SilverGenerationError, match="enriched__transactions would hold both"):
        silver.render([enriched, _contract("public", "transactions", "enriched")])


def test_the_repositorys_contracts_give_each_table_its_own_silver_name() -> None:
    contracts = load_contracts(Path(__file__).parents[2] / "schemas")
    models = {c.full_name: silver.model_name(c) for c in contracts}
    assert models["lending.transactions"] == "transactions"
    assert models["enriched.transactions"] == "enriched__transactions"
    assert len(set(models.values())) == len(models)


def test_a_contract_keeps_its_source_through_avro() -> None:
    shop = _contract("public", "users", "shop")
    assert avro_to_contract(contract_to_avro(shop)) == shop
    assert "cdcflow.source" not in contract_to_avro(_contract("public", "users"))  # primary: unchanged file
    with pytest.raises(ContractError, match="topic prefix"):
        _contract("public", "users", "no/slash")


def test_silver_generation_keeps_two_sources_public_users_apart() -> None:
    files = silver.render([_contract("public", "users"), _contract("public", "users", "shop")])
    assert {"models/silver/users.sql", "models/silver/shop__users.sql"} <= set(files)
    assert '"source": "shop__public__users"' in files["models/silver/shop__users.sql"]
    assert '"source": "public__users"' in files["models/silver/users.sql"]


def test_one_table_name_in_two_schemas_of_a_source_is_refused_loudly() -> None:
    with pytest.raises(SilverGenerationError, match="shop__users would hold both"):
        silver.render([_contract("public", "users", "shop"), _contract("sales", "users", "shop")])


def test_another_sources_contracts_have_their_own_folders(tmp_path: Path) -> None:
    primary, shop = _contract("public", "users"), _contract("public", "users", "shop")
    assert write_contract(tmp_path, primary) == tmp_path / "public.users.avsc"
    assert write_contract(tmp_path, shop) == tmp_path / "shop" / "public.users.avsc"
    assert sorted(load_contracts(tmp_path), key=lambda c: c.source) == [primary, shop]
    assert lake_contract_path(primary) == "_contracts/public.users/v00001.avsc"
    assert lake_contract_path(shop) == "_contracts/shop/public.users/v00001.avsc"
    lake = LocalLake(tmp_path / "lake")
    publish_contract(lake, primary)
    publish_contract(lake, shop)
    found = contracts_from_lake(lake)
    assert found == [primary, shop]
    registry = ContractRegistry.of(found)
    assert registry.get("public", "users") == primary
    assert registry.get("public", "users", "shop") == shop


def test_a_contract_in_another_sources_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "crm").mkdir()
    (tmp_path / "crm" / "public.users.avsc").write_text(
        json.dumps(contract_to_avro(_contract("public", "users", "shop")))
    )
    with pytest.raises(ContractError, match="belongs in"):
        load_contracts(tmp_path)
    lake = LocalLake(tmp_path / "lake")
    lake.write(
        "_contracts/crm/public.users/v00001.avsc", json.dumps(contract_to_avro(_contract("public", "users"))).encode()
    )
    with pytest.raises(ContractError, match="not to the folder"):
        contracts_from_lake(lake)


def test_a_process_serving_another_source_knows_it_from_its_settings() -> None:
    assert KafkaSettings().source() == PRIMARY
    assert KafkaSettings(topic_prefix="cdcflow", primary_prefix="cdcflow").source() == PRIMARY
    assert KafkaSettings(topic_prefix="shop", primary_prefix="cdcflow").source() == "shop"
    with pytest.raises(ValidationError, match="primary_prefix"):
        KafkaSettings(primary_prefix="not/a/prefix")


def test_a_writer_of_another_source_routes_its_topics_to_that_sources_contracts() -> None:
    primary, shop = _contract("public", "users"), _contract("public", "users", "shop")
    router = Router("shop", ContractRegistry.of([primary, shop]), [], 1 << 20, source="shop")
    decoder = router.route("shop.public.users").decoder
    assert decoder is not None
    assert decoder.contract == shop
    router.adopt(replace(primary, version=2))  # another source's table of the same name changes nothing here
    assert router.route("shop.public.users").decoder.contract == shop  # type: ignore[union-attr]
    router.adopt(replace(shop, version=2))
    assert router.route("shop.public.users").decoder.contract.version == 2  # type: ignore[union-attr]
    only_primary = Router("shop", ContractRegistry.of([primary]), [], 1 << 20, source="shop")
    assert only_primary.route("shop.public.users").reason == "unknown_table"


def test_another_sources_silver_files_name_their_source() -> None:
    files = silver.render([_contract("public", "users", "shop")])
    model = files["models/silver/shop__users.sql"]
    assert "from the contract of shop/public.users" in model
    assert '"cdcflow_contract": "shop/public.users"' in model
