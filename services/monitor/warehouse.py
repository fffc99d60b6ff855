"""Bronze freshness and the last load of each table, read from the DuckDB warehouse.

DuckDB lets one process write a file, and a read-only reader shares its lock only with other readers: the
probe opens the file read-only for the few milliseconds of its queries and closes it, so the loader (which
opens it per call and tries again next cycle when it is taken) and dbt are not held up. While the file is
taken (a ``dbt build`` holds it for its whole run) the probe fails, and freshness keeps growing from the
newest ``_source_ts`` it last read — bronze cannot get fresher while nobody can write it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from services.common.metrics import MonitorMetrics

__all__ = ["WarehouseProbe", "table_label"]

_MANIFEST = "_cdcflow_load_manifest"


def table_label(bronze_name: str) -> str:
    """The ``table`` label: ``lending__customers`` → ``lending.customers``, as the loader labels the primary
    source's tables; any other bronze name (another source's ``P__schema__table``, a hashed one) stays whole,
    since only the name itself is unambiguous there (services/common/naming.py)."""
    parts = bronze_name.split("__")
    return ".".join(parts) if len(parts) == 2 else bronze_name


class WarehouseProbe:
    name = "warehouse"

    def __init__(self, path: Path, metrics: MonitorMetrics, *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._metrics = metrics
        self._clock = clock
        self._newest: dict[str, float] = {}  # table → newest _source_ts (unix seconds) last read

    def close(self) -> None:
        """Nothing stays open between polls."""

    def poll(self) -> None:
        try:
            newest, loads = self._read()
        except Exception:
            self._report_freshness()  # from the values last read: bronze is at least that stale
            raise
        self._newest = newest
        self._report_freshness()
        for table, loaded_at in loads.items():
            self._metrics.bronze_last_load.labels(table).set(loaded_at)

    def _read(self) -> tuple[dict[str, float], dict[str, float]]:
        if not self._path.exists():
            raise FileNotFoundError(f"no warehouse at {self._path} yet")
        conn = duckdb.connect(str(self._path), read_only=True)
        try:
            tables = [
                str(row[0])
                for row in conn.execute(
                    "select distinct table_name from information_schema.columns"
                    " where table_schema = 'bronze' and column_name = '_source_ts'"
                ).fetchall()
            ]
            newest = {}
            for name in tables:
                quoted = '"' + name.replace('"', '""') + '"'
                row = conn.execute(f"select max(_source_ts) from bronze.{quoted}").fetchone()  # noqa: S608
                if row and isinstance(row[0], datetime):
                    newest[table_label(name)] = _unix(row[0])
            return newest, self._loads(conn)
        finally:
            conn.close()

    def _loads(self, conn: duckdb.DuckDBPyConnection) -> dict[str, float]:
        found = conn.execute(
            "select 1 from information_schema.tables where table_schema = 'bronze' and table_name = ?", [_MANIFEST]
        ).fetchone()
        if not found:
            return {}
        query = "select bronze_table, max(loaded_at) from bronze._cdcflow_load_manifest group by 1"
        rows = conn.execute(query).fetchall()
        return {table_label(str(t)): _unix(at) for t, at in rows if isinstance(at, datetime)}

    def _report_freshness(self) -> None:
        now = self._clock()
        for table, newest in self._newest.items():
            self._metrics.bronze_freshness.labels(table).set(max(0.0, now - newest))


def _unix(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
