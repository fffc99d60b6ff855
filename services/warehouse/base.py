"""The warehouse seam: what the loader needs of a backend."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.common.contracts import TableContract
from services.common.lake import Lake
from services.warehouse.bronze import BronzeChange, LoadBatch

__all__ = ["LoadResult", "LoadedFile", "Warehouse"]


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """A manifest row: this version of this lake file is in bronze."""

    path: str
    version: str


@dataclass(frozen=True, slots=True)
class LoadResult:
    load_id: str
    files: int
    rows_staged: int
    rows_inserted: int  # staged minus the coordinates bronze already had

    @property
    def duplicates_skipped(self) -> int:
        return self.rows_staged - self.rows_inserted


class Warehouse(Protocol):
    """Bronze tables, their load manifest, and idempotent loads.

    ``load`` stages the batch, inserts the rows whose Kafka coordinates bronze does not hold yet and
    records the files in the manifest — the insert and the manifest in one transaction — then drops the
    staging table. Running it again for the same batch changes nothing.
    """

    def session(self) -> AbstractContextManager[None]:
        """Keep open what the calls inside would each open: DuckDB opens its file once for them instead of once
        per call (an open reads the whole catalog, so it costs more with every bronze table), and another
        process waits for the file until the block ends. Raises WarehouseBusyError when the file is held."""
        ...

    def ensure_bronze(self, contract: TableContract) -> BronzeChange:
        """Create the bronze table, or add the contract's new columns and widen the columns whose type widened
        (:func:`services.warehouse.bronze.widens`); returns the columns added (all, for a new table) and widened.

        Raises BronzeSchemaError when a column's type changed in any other way (the table stops; the others
        go on).
        """
        ...

    def loaded_files(self, contract: TableContract, paths: Collection[str] | None = None) -> set[LoadedFile]:
        """The load manifest's rows of the table's bronze: each version of a lake file that was loaded.

        With ``paths`` (what a listing found), the rows of those files — a backend may return more, never
        fewer — so the cost follows the listing, not every file ever loaded.
        """
        ...

    def load(self, batch: LoadBatch, lake: Lake, *, before_commit: Callable[[], None] | None = None) -> LoadResult:
        """Load the batch's files, read from ``lake``; ``before_commit`` runs between staging and commit.

        Raises CorruptFileError naming a file that cannot be loaded (the caller sets it aside and retries
        the rest), WarehouseBusyError when a retry later may pass.
        """
        ...

    def max_source_ts(self, contract: TableContract) -> datetime | None: ...

    def drop_stale_staging(self) -> Sequence[str]:
        """Staging tables left by a crash; they are dropped and named."""
        ...

    def close(self) -> None: ...
