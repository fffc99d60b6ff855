"""The transform's working copy of the dbt project.

``cdcflow transform`` never writes into the source tree: it keeps a copy of ``dbt/`` under its work
directory, with the silver files rendered from *every* contract (the repository's and the versions the
writers published in the lake), and points dbt at it; dbt's ``target/`` and ``logs/`` live beside it. So a
table or column added while the pipeline runs reaches silver at the next run, the image may ship the
project read-only, and two transforms with different work directories never share files. Only files whose
content changed are rewritten, which keeps dbt's partial parsing effective.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from services.common.contracts import TableContract
from services.transform.silver import GENERATED_MARK, render

__all__ = ["IGNORED", "ProjectCopy", "materialize"]

IGNORED = frozenset({"target", "logs", "dbt_packages", ".user.yml", ".cdcflow", "__pycache__"})
"""Top-level entries of a dbt project that are dbt's output, not its source."""


@dataclass(slots=True)
class ProjectCopy:
    """The working copy and what the last :func:`materialize` changed in it."""

    path: Path
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


def _source_files(source: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0] in IGNORED or path.name.startswith(".tmp-") or not path.is_file():
            continue
        files[relative.as_posix()] = path.read_bytes()
    return files


def _is_generated(data: bytes) -> bool:
    return GENERATED_MARK.encode() in data[:400]


def materialize(source: Path, destination: Path, contracts: Iterable[TableContract]) -> ProjectCopy:
    """Make ``destination`` the project of ``source`` with silver rendered from ``contracts``."""
    wanted = {name: data for name, data in _source_files(source).items() if not _is_generated(data)}
    wanted.update({name: text.encode() for name, text in render(contracts).items()})
    copy = ProjectCopy(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(wanted.items()):
        path = destination / name
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".tmp-{path.name}")
        temp.write_bytes(data)
        os.replace(temp, path)
        copy.written.append(name)
    for name in _source_files(destination):
        if name not in wanted:
            (destination / name).unlink()
            copy.removed.append(name)
    return copy
