"""Bronze in BigQuery, read for ``cdcflow monitor``: each poll scans only what may be new.

Bronze is append-only and partitioned by day of ``_source_ts``: once a table's newest ``_source_ts`` is known,
the next poll asks only for rows at or after it, so it reads the newest partitions instead of the whole table
every interval. The load manifest is asked the same way, from the oldest of the newest loads known.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.cloud import bigquery

from services.monitor.warehouse import unix_time
from services.warehouse.bronze import MANIFEST_TABLE

__all__ = ["BigQueryBronze"]


class BigQueryBronze:
    def __init__(self, client: bigquery.Client, *, dataset: str, location: str, timeout_s: float) -> None:
        self._client = client
        self._dataset = f"{client.project}.{dataset}"
        self._location = location
        self._timeout_s = timeout_s
        self._newest: dict[str, float] = {}
        self._loads: dict[str, float] = {}

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]  # the client leaves close() untyped

    def read(self) -> tuple[dict[str, float], dict[str, float]]:
        names = [t.table_id for t in self._client.list_tables(self._dataset, timeout=self._timeout_s)]
        for name in names:
            if name != MANIFEST_TABLE and not name.startswith("_"):
                self._read_newest(name)
        if MANIFEST_TABLE in names:
            self._read_loads()
        return dict(self._newest), dict(self._loads)

    def _read_newest(self, name: str) -> None:
        known = self._newest.get(name)
        sql = f"SELECT MAX(_source_ts) FROM `{self._dataset}.{name}`"  # noqa: S608 - names come from the listing
        newest = self._scalar(sql + (" WHERE _source_ts >= @since" if known is not None else ""), known)
        if isinstance(newest, datetime):
            self._newest[name] = unix_time(newest)

    def _read_loads(self) -> None:
        since = min(self._loads.values()) if self._loads else None
        sql = f"SELECT bronze_table, MAX(loaded_at) FROM `{self._dataset}.{MANIFEST_TABLE}`"  # noqa: S608
        sql += (" WHERE loaded_at >= @since" if since is not None else "") + " GROUP BY 1"
        for table, loaded_at in self._rows(sql, since):
            if isinstance(loaded_at, datetime):
                self._loads[str(table)] = max(self._loads.get(str(table), 0.0), unix_time(loaded_at))

    def _scalar(self, sql: str, since: float | None) -> Any:
        rows = self._rows(sql, since)
        return rows[0][0] if rows else None

    def _rows(self, sql: str, since: float | None) -> list[Any]:
        parameters = (
            [bigquery.ScalarQueryParameter("since", "TIMESTAMP", datetime.fromtimestamp(since, UTC))]
            if since is not None
            else []
        )
        config = bigquery.QueryJobConfig(query_parameters=parameters)
        job = self._client.query(sql, job_config=config, location=self._location, timeout=self._timeout_s)
        return list(job.result(timeout=self._timeout_s))
