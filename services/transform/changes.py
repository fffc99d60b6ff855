"""Which tables' bronze changed: the loader tells the transform that runs in its process.

The loader adds a table after each batch that inserted rows; each silver step takes the set and builds those
tables' silver only, so a step costs what changed, not what is captured.
"""

from __future__ import annotations

import threading

__all__ = ["ChangedTables"]


class ChangedTables:
    """A set of table names shared by two threads: :meth:`add` by the loader, :meth:`take` by the transform."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: set[str] = set()

    def add(self, table: str) -> None:
        with self._lock:
            self._tables.add(table)

    def take(self) -> frozenset[str]:
        """Every table added since the last call (and forget them)."""
        with self._lock:
            taken, self._tables = frozenset(self._tables), set()
        return taken
