"""Silver in BigQuery, for ``cdcflow verify`` and ``cdcflow backfill deletes``: the dataset ``silver`` of the
warehouse's project (dbt's schema names are the same on both backends), read with the warehouse's client.

Rows come back as the client types them (NUMERIC and BIGNUMERIC as ``Decimal``, TIMESTAMP as an aware
``datetime``, DATETIME as a naive one, BYTES as ``bytes``); :mod:`services.transform.canonical` spells each as the
contract type's one spelling, so they compare with PostgreSQL's as DuckDB's do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from services.common.contracts import TableContract
from services.common.sql import googlesql_name
from services.transform.silver import model_name

__all__ = ["SILVER_DATASET", "BigQuerySilver"]

SILVER_DATASET = "silver"
_PAGE_ROWS = 5_000


class BigQuerySilver:
    """``silver.<table>`` in the warehouse's BigQuery project."""

    def __init__(self, client: bigquery.Client, *, timeout_s: float = 600.0) -> None:
        self._client = client
        self._timeout_s = timeout_s

    def _table_id(self, contract: TableContract) -> str:
        return f"{self._client.project}.{SILVER_DATASET}.{model_name(contract)}"

    def _query(self, sql: str, parameters: Sequence[bigquery.ScalarQueryParameter] = ()) -> Iterator[Any]:
        config = bigquery.QueryJobConfig(query_parameters=list(parameters))
        job = self._client.query(sql, job_config=config, timeout=self._timeout_s)
        return iter(job.result(page_size=_PAGE_ROWS, timeout=self._timeout_s))

    def exists(self, contract: TableContract) -> bool:
        try:
            self._client.get_table(self._table_id(contract), timeout=self._timeout_s)
        except NotFound:
            return False
        return True

    def _select(self, contract: TableContract, columns: Sequence[str]) -> str:
        names = ", ".join(googlesql_name(c) for c in columns)
        return f"select {names} from {googlesql_name(self._table_id(contract))}"  # noqa: S608 - identifiers only

    def rows(self, contract: TableContract) -> Iterator[Sequence[Any]]:
        for row in self._query(self._select(contract, [c.name for c in contract.columns])):
            yield tuple(row.values())

    def row(self, contract: TableContract, key: Sequence[Any]) -> Sequence[Any] | None:
        where = " and ".join(f"{googlesql_name(k)} = ?" for k in contract.primary_key)
        select = self._select(contract, [c.name for c in contract.columns])
        found = next(self._query(f"{select} where {where}", [_parameter(v) for v in key]), None)
        return None if found is None else tuple(found.values())

    def keys(self, contract: TableContract) -> Iterator[tuple[tuple[Any, ...], int]]:
        """Every live row's primary key (raw values) and the topic partition of its newest version."""
        for row in self._query(self._select(contract, [*contract.primary_key, "_kafka_partition"])):
            values = tuple(row.values())
            yield values[:-1], int(values[-1])


def _parameter(value: Any) -> bigquery.ScalarQueryParameter:
    """A positional query parameter typed by the value the client returned for the column."""
    return bigquery.ScalarQueryParameter(None, _type_of(value), value)


# Python type → BigQuery type, first match wins: bool before int, datetime before date (subclasses).
_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "BOOL"),
    (int, "INT64"),
    (float, "FLOAT64"),
    (Decimal, "BIGNUMERIC"),
    (bytes, "BYTES"),
    (dt.datetime, "TIMESTAMP"),
    (dt.date, "DATE"),
    (dt.time, "TIME"),
)


def _type_of(value: Any) -> str:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return "DATETIME"
    return next((name for kind, name in _TYPES if isinstance(value, kind)), "STRING")
