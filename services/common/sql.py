"""Identifiers and literals spelled for the SQL dialects cdcflow writes: one place for each quoting rule."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = [
    "googlesql_name",
    "googlesql_string",
    "googlesql_timestamp",
    "quote_name",
    "quote_qualified",
    "quote_string",
]


def quote_name(name: str) -> str:
    """An identifier of PostgreSQL or DuckDB (standard SQL): in double quotes, a quote doubled."""
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(table: str) -> str:
    """A table named ``schema.table`` (the schema ends at the first dot) as a quoted, qualified identifier."""
    schema, name = table.split(".", 1)
    return f"{quote_name(schema)}.{quote_name(name)}"


def quote_string(value: str) -> str:
    """A string literal of PostgreSQL or DuckDB (standard SQL), for statements that take no parameters."""
    return "'" + value.replace("'", "''") + "'"


def googlesql_name(name: str) -> str:
    """An identifier or a ``project.dataset.table`` path of BigQuery: in backticks, backslash-escaped."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def googlesql_string(value: str) -> str:
    """A GoogleSQL string literal (scripts take no query parameters on every endpoint cdcflow runs against)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def googlesql_timestamp(value: datetime) -> str:
    return f"TIMESTAMP '{value.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"
