"""Bronze freshness and the last load of each table, read from the warehouse (DuckDB or BigQuery).

A reader returns, per bronze table, the newest ``_source_ts`` and the newest load in the load manifest; the
probe turns them into gauges, and keeps freshness growing from the values last read while a read fails.

DuckDB lets one process write a file, and a read-only reader shares its lock only with other readers: the
probe opens the file read-only for the few milliseconds of its queries and closes it, so the loader (which
opens it per call and tries again next cycle when it is taken) and dbt are not held up. While the file is
taken (a ``dbt build`` holds it for its whole run) the probe fails, and freshness keeps growing — bronze
cannot get fresher while nobody can write it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import duckdb

from services.common.metrics import MonitorMetrics
from services.common.sql import quote_name
from services.warehouse.bronze import MANIFEST_TABLE

__all__ = ["BronzeReader", "DuckDBBronze", "WarehouseProbe", "table_label", "unix_time"]


def table_label(bronze_name: str) -> str:
    """The ``table`` label: ``lending__customers`` → ``lending.customers``, as the loader labels the primary
    source's tables; any other bronze name (another source's ``P__schema__table``, a hashed one) stays whole,
    since only the name itself is unambiguous there (services/common/naming.py)."""
    parts = bronze_name.split("__")
    return ".".join(parts) if len(parts) == 2 else bronze_name


def unix_time(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class BronzeReader(Protocol):
    def read(self) -> tuple[dict[str, float], dict[str, float]]:
        """Per bronze table name: the newest ``_source_ts`` and the newest ``loaded_at`` (unix seconds)."""
        ...

    def close(self) -> None: ...


class DuckDBBronze:
    """The DuckDB file, opened read-only for each read and closed at once, and only when it changed: while
    nothing was written (no new load, no dbt run) the last answer stands and the file is not even opened."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._last: tuple[tuple[int, int], ...] | None = None
        self._answer: tuple[dict[str, float], dict[str, float]] = ({}, {})

    def close(self) -> None:
        """Nothing stays open between reads."""

    def read(self) -> tuple[dict[str, float], dict[str, float]]:
        if not self._path.exists():
            raise FileNotFoundError(f"no warehouse at {self._path} yet")
        signature = self._signature()
        if signature != self._last:
            self._answer = self._read()
            self._last = signature
        return self._answer

    def _signature(self) -> tuple[tuple[int, int], ...]:
        """Modification time and size of the file and of its write-ahead log: a commit changes one of them."""
        files = (self._path, self._path.with_name(self._path.name + ".wal"))
        return tuple((s.st_mtime_ns, s.st_size) for s in (f.stat() for f in files if f.exists()))

    def _read(self) -> tuple[dict[str, float], dict[str, float]]:
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
                quoted = quote_name(name)
                row = conn.execute(f"select max(_source_ts) from bronze.{quoted}").fetchone()  # noqa: S608
                if row and isinstance(row[0], datetime):
                    newest[name] = unix_time(row[0])
            return newest, self._loads(conn)
        finally:
            conn.close()

    def _loads(self, conn: duckdb.DuckDBPyConnection) -> dict[str, float]:
        found = conn.execute(
            "select 1 from information_schema.tables where table_schema = 'bronze' and table_name = ?", [MANIFEST_TABLE]
        ).fetchone()
        if not found:
            return {}
        query = f"select bronze_table, max(loaded_at) from bronze.{MANIFEST_TABLE} group by 1"  # noqa: S608
        rows = conn.execute(query).fetchall()
        return {str(t): unix_time(at) for t, at in rows if isinstance(at, datetime)}


class WarehouseProbe:
    name = "warehouse"

    def __init__(
        self, reader: BronzeReader, metrics: MonitorMetrics, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._reader = reader
        self._metrics = metrics
        self._clock = clock
        self._newest: dict[str, float] = {}  # table label → newest _source_ts last read

    def close(self) -> None:
        self._reader.close()

    def poll(self) -> None:
        try:
            newest, loads = self._reader.read()
        except Exception:
            self._report_freshness()  # from the values last read: bronze is at least that stale
            raise
        self._newest = {table_label(name): at for name, at in newest.items()}
        self._report_freshness()
        for name, loaded_at in loads.items():
            self._metrics.bronze_last_load.labels(table_label(name)).set(loaded_at)

    def _report_freshness(self) -> None:
        now = self._clock()
        for table, newest in self._newest.items():
            self._metrics.bronze_freshness.labels(table).set(max(0.0, now - newest))
