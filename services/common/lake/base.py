"""The Lake seam: what the lake writer and the loader need from storage, whatever the backend.

Exactly-once in the lake rests on two properties every backend must keep (DESIGN.md, "Lake"): a write
is atomic and replaces a file of the same name (a batch re-cut after a crash overwrites its orphan), and
a file's ``version`` changes whenever its content does (the loader tells an overwritten file from one it
already loaded).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["PARQUET_CONTENT_TYPE", "Lake", "LakeFile"]

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


@dataclass(frozen=True, slots=True)
class LakeFile:
    """One complete file in the lake.

    ``path`` is relative to the lake root with ``/`` separators on every backend. ``version`` is the GCS
    generation or, locally, the modification time in nanoseconds: it differs between two writes of the
    same path, so an overwritten file is seen as new.
    """

    path: str
    size: int
    version: str


@runtime_checkable
class Lake(Protocol):
    """Storage for lake files. Every ``path`` is lake-relative and checked by ``validate_relative_path``.

    Errors are :class:`~services.common.lake.errors.LakeTransientError` (retry later) or
    :class:`~services.common.lake.errors.LakeTerminalError` (do not), never a backend's own exception.
    """

    def write(self, path: str, data: bytes) -> LakeFile:
        """Store ``data`` under ``path`` atomically: readers see the old complete file or the new one."""
        ...

    def write_if(self, path: str, data: bytes, *, version: str | None) -> LakeFile:
        """:meth:`write`, only if ``path`` is still at ``version`` (``None``: only if there is no file).

        Otherwise :class:`~services.common.lake.errors.LakeVersionChangedError` and nothing is written: two
        callers that read the same version cannot both replace it (a lease, a marker).
        """
        ...

    def read(self, path: str) -> bytes:
        """The whole content; :class:`~services.common.lake.errors.LakeNotFoundError` if there is none."""
        ...

    def list(self, prefix: str = "") -> Iterator[LakeFile]:
        """Every file whose path starts with ``prefix`` (a plain string match), recursively, sorted by path.

        Temp files of unfinished writes are never listed.
        """
        ...

    def delete(self, path: str) -> None:
        """Remove the file; a missing file is not an error, so a retried delete succeeds."""
        ...

    def move(self, src: str, dst: str, *, version: str | None = None) -> LakeFile:
        """Move a file (to the archive or failed prefixes), replacing ``dst``.

        With ``version``, only that version of ``src`` is moved: if the file was rewritten since (a restarted
        writer re-cutting a batch under the same name), :class:`LakeVersionChangedError` is raised and the
        newer file stays. A retried move whose first attempt completed finds ``src`` gone and ``dst`` present,
        and succeeds.
        """
        ...

    def uri(self, path: str) -> str:
        """The address other tools load the file from: ``file:///abs/…`` or ``gs://bucket/prefix/…``."""
        ...

    def exists(self, path: str) -> bool:
        """Whether a complete file is stored under ``path``."""
        ...

    def close(self) -> None:
        """Release connections the lake owns; the lake is unusable afterwards."""
        ...
