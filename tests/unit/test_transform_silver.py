"""Silver generated from contracts: the files, their sync, and the errors a contract can cause."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from services.common.contracts import Column, TableContract, load_contracts
from services.common.settings import repo_root
from services.transform.errors import SilverGenerationError
from services.transform.project import materialize
from services.transform.silver import GENERATED_MARK, SOURCES_FILE, buildable, render, sync

yaml: Any = importlib.import_module("yaml")  # PyYAML comes with dbt; it ships no type stubs


def _contract(
    table: str = "accounts", *, key: tuple[str, ...] = ("account_id",), schema: str = "bank"
) -> TableContract:
    columns = (
        Column("account_id", "int64", "bigint", nullable=False),
        Column("region", "string", "text", nullable=False),
        Column("balance", "decimal", "numeric(20,2)", precision=20, scale=2),
        Column("rate", "variable_decimal", "numeric"),
        Column("tags", "array", "text[]", items=Column("element", "string", "text")),
    )
    return TableContract(schema, table, columns, key, version=3)


def _macro_argument(model_sql: str, macro: str = "silver_current") -> dict[str, Any]:
    """The table description a generated model file hands to its macro (a JSON literal)."""
    body = model_sql.split(f"{{{{ {macro}(", 1)[1].rsplit(") }}", 1)[0]
    document: dict[str, Any] = json.loads(body)
    return document


def test_every_contract_gets_a_current_and_a_history_model_and_a_source() -> None:
    files = render([_contract(), _contract("branches", key=("account_id", "region"))])
    assert sorted(files) == [
        SOURCES_FILE,
        "models/silver/_models.yml",
        "models/silver/accounts.sql",
        "models/silver/accounts_history.sql",
        "models/silver/branches.sql",
        "models/silver/branches_history.sql",
    ]
    current = files["models/silver/accounts.sql"]
    assert current.startswith(f"-- {GENERATED_MARK} from the contract of bank.accounts (version 3).")
    assert '{{ config(unique_key=["account_id"], meta={' in current
    assert '"cdcflow_delete_ops": ["d", "t"]' in current
    argument = _macro_argument(current)
    assert argument["source"] == "bank__accounts"
    assert argument["primary_key"] == ["account_id"]
    assert [(c["name"], c["semantic"]) for c in argument["columns"]] == [
        ("account_id", "int64"),
        ("region", "string"),
        ("balance", "decimal"),
        ("rate", "variable_decimal"),
        ("tags", "array"),
    ]
    history = files["models/silver/branches_history.sql"]
    assert '{{ config(unique_key=["account_id", "region", "_kafka_partition", "_kafka_offset"]' in history
    assert "{{ silver_history(" in history
    assert '"cdcflow_delete_ops": ["x"]' in history  # history deletes only an earlier copy of a version sent again


def test_the_yaml_holds_sources_with_freshness_and_the_tests_of_every_key() -> None:
    files = render([_contract(), _contract("branches", key=("account_id", "region"))])
    sources = yaml.safe_load(files[SOURCES_FILE])["sources"][0]
    assert (sources["name"], sources["schema"]) == ("bronze", "bronze")
    assert sources["config"]["loaded_at_field"] == "_loaded_at"
    assert sources["config"]["freshness"]["error_after"] == {"count": 24, "period": "hour"}
    assert [t["name"] for t in sources["tables"]] == ["bank__accounts", "bank__branches"]

    models = {m["name"]: m for m in yaml.safe_load(files["models/silver/_models.yml"])["models"]}
    assert list(models) == ["accounts", "accounts_history", "branches", "branches_history"]
    key = next(c for c in models["accounts"]["columns"] if c["name"] == "account_id")
    assert key["data_tests"] == ["not_null", "unique"]
    composite = [next(iter(t)) for t in models["branches"]["data_tests"]]
    assert composite == ["cdcflow_unique_combination", "cdcflow_silver_matches_bronze"]
    unique = models["branches"]["data_tests"][0]["cdcflow_unique_combination"]
    assert unique["arguments"]["columns"] == ["account_id", "region"]
    matches = models["accounts"]["data_tests"][0]["cdcflow_silver_matches_bronze"]
    assert matches["name"] == "silver_matches_bronze__accounts"
    assert matches["arguments"]["source_table"] == "bank__accounts"
    one_current = models["accounts_history"]["data_tests"][1]["cdcflow_unique_combination"]
    assert one_current["config"] == {"where": "is_current"}
    rate = next(c for c in models["accounts"]["columns"] if c["name"] == "rate")
    assert "text on DuckDB" in rate["description"]


def test_a_table_without_a_primary_key_is_a_clear_error() -> None:
    with pytest.raises(SilverGenerationError, match=r"bank\.accounts has no primary key.*ADD PRIMARY KEY"):
        render([_contract(key=())])


def test_two_schemas_with_one_table_name_cannot_share_silver() -> None:
    with pytest.raises(SilverGenerationError, match=r"silver\.accounts would hold both bank\.accounts and crm"):
        render([_contract(), _contract(schema="crm")])
    with pytest.raises(SilverGenerationError, match=r"silver\.accounts_history"):
        render([_contract(), _contract("accounts_history")])


def test_the_tables_left_out_are_those_without_a_better_claim_to_the_name() -> None:
    accounts, history, crm, keyless = (
        _contract(),
        _contract("accounts_history"),
        _contract(schema="crm"),
        _contract("branches", key=()),
    )
    kept, why = buildable([accounts, history, _contract("ledger"), keyless])
    assert [c.full_name for c in kept] == ["bank.accounts", "bank.ledger"]  # accounts keeps both its models
    assert sorted(why) == ["bank.accounts_history", "bank.branches"]
    assert why["bank.accounts_history"].startswith("silver.accounts_history is the history of bank.accounts")
    kept, why = buildable([accounts, crm, history])
    assert kept == [history]  # the shared name leaves out both, and with them the history's claim
    assert why["crm.accounts"] == why["bank.accounts"]


def test_sync_writes_once_removes_what_it_generated_and_leaves_hand_written_files(tmp_path: Path) -> None:
    first = sync(tmp_path, [_contract(), _contract("branches")])
    assert len(first.written) == 6
    assert not sync(tmp_path, [_contract(), _contract("branches")]).changed
    hand_written = tmp_path / "models" / "silver" / "notes.sql"
    hand_written.write_text("select 1 as id\n")

    check = sync(tmp_path, [_contract()], check=True)
    assert sorted(check.removed) == ["models/silver/branches.sql", "models/silver/branches_history.sql"]
    assert (tmp_path / "models" / "silver" / "branches.sql").exists()  # --check changes nothing

    applied = sync(tmp_path, [_contract()])
    assert sorted(applied.removed) == sorted(check.removed)
    assert not (tmp_path / "models" / "silver" / "branches.sql").exists()
    assert hand_written.exists()


def test_the_repository_files_are_those_of_its_contracts() -> None:
    """`cdcflow schemas silver --check`: the committed silver is what the contracts in schemas/ generate."""
    report = sync(repo_root() / "dbt", load_contracts(repo_root() / "schemas"), check=True)
    assert not report.changed, f"run `cdcflow schemas silver`: {report.written + report.removed}"


def test_the_working_copy_renders_contracts_the_repository_does_not_have(tmp_path: Path) -> None:
    source = repo_root() / "dbt"
    contracts = [*load_contracts(repo_root() / "schemas"), _contract()]
    copy = materialize(source, tmp_path / "project", contracts)
    assert "models/silver/accounts.sql" in copy.written
    assert (tmp_path / "project" / "dbt_project.yml").read_bytes() == (source / "dbt_project.yml").read_bytes()
    assert not (tmp_path / "project" / "target").exists()

    again = materialize(source, tmp_path / "project", contracts)
    assert not again.changed
    (tmp_path / "project" / "models" / "gold" / "stale.sql").write_text("select 1\n")
    fewer = materialize(source, tmp_path / "project", contracts[:-1])
    assert sorted(fewer.removed) == [
        "models/gold/stale.sql",
        "models/silver/accounts.sql",
        "models/silver/accounts_history.sql",
    ]
    assert fewer.written == [SOURCES_FILE, "models/silver/_models.yml"]
