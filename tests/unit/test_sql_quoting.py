"""Identifiers and literals as services/common/sql.py spells them, checked by PostgreSQL's own rules as DuckDB
(which follows them) parses them back."""

from __future__ import annotations

import duckdb

from services.common.sql import quote_qualified, quote_string


def test_a_qualified_name_with_dots_and_quotes_in_its_table_reads_back_as_that_table() -> None:
    table = 'odd schema.a "quoted".table'  # the schema ends at the first dot; the table keeps the rest
    with duckdb.connect() as conn:
        conn.execute('create schema "odd schema"')
        conn.execute(f"create table {quote_qualified(table)} (v text)")
        value = quote_string("it's")
        conn.execute(f"insert into {quote_qualified(table)} values ({value})")
        assert conn.execute(
            "select table_schema, table_name from information_schema.tables where table_schema = 'odd schema'"
        ).fetchall() == [("odd schema", 'a "quoted".table')]
        assert conn.execute(f"select v from {quote_qualified(table)}").fetchall() == [("it's",)]
