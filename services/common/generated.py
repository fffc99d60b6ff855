"""Files generated from the project's own sources (dbt's silver models from the contracts, the Kubernetes
manifests from the connector files): written only when their text changes, checked in CI with ``--check``,
and removed when their source goes — but only files that carry the generator's mark, never hand-written ones.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SyncReport", "sync_files"]


@dataclass(slots=True)
class SyncReport:
    """What :func:`sync_files` changed (or, with ``check``, would change)."""

    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


def sync_files(root: Path, wanted: Mapping[str, str], generated: Iterable[str], *, check: bool) -> SyncReport:
    """Make the files below ``root`` the ``wanted`` texts (by relative path) and remove the ``generated`` ones
    (relative paths of files that carry the generator's mark) no longer wanted; ``check`` only reports."""
    report = SyncReport()
    for relative, text in wanted.items():
        path = root / relative
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            report.unchanged += 1
            continue
        report.written.append(relative)
        if not check:
            _write_atomically(path, text)
    for relative in generated:
        if relative not in wanted:
            report.removed.append(relative)
            if not check:
                (root / relative).unlink()
    return report


def _write_atomically(path: Path, text: str) -> None:
    """A reader (dbt, kubectl, a test) sees the old text or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)
