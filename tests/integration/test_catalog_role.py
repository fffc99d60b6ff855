"""The writer reads table definitions as a read-only role: it sees every contract and can touch no row."""

from __future__ import annotations

import psycopg
import pytest

from services.common.contracts.catalog import contracts_from_catalog
from services.common.settings import Settings
from services.stack.runtime import Stack


def test_the_catalog_role_sees_the_same_contracts_as_the_owner(stack: Stack, settings: Settings) -> None:
    include = [r"lending\..*"]
    as_owner = contracts_from_catalog(settings.postgres.dsn(), include)
    as_catalog = contracts_from_catalog(settings.postgres.catalog_dsn(), include)
    assert as_owner
    assert as_catalog == as_owner


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("select count(*) from lending.customers", "permission denied"),
        ("create table public.catalog_role_probe (id int)", "read-only transaction"),
        ("update lending.customers set notes = notes where false", "permission denied"),
    ],
)
def test_the_catalog_role_reads_no_row_and_changes_nothing(
    stack: Stack, settings: Settings, statement: str, refusal: str
) -> None:
    with (
        psycopg.connect(settings.postgres.catalog_dsn(), connect_timeout=5) as conn,
        pytest.raises(psycopg.Error, match=refusal),
    ):
        conn.execute(statement.encode())


def test_the_stack_makes_the_role_idempotently(stack: Stack, settings: Settings) -> None:
    stack.postgres.ensure_catalog_role()
    stack.postgres.ensure_catalog_role()
    with psycopg.connect(settings.postgres.dsn(), connect_timeout=5) as conn:
        row = conn.execute(
            "select rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolconfig from pg_roles where rolname = %s",
            (settings.postgres.catalog_user,),
        ).fetchone()
    assert row == (False, False, False, False, ["default_transaction_read_only=on"])
