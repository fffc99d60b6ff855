"""Keep a process from loading libraries it never uses, where another library would load them on its own.

pyarrow imports pandas, when it is installed, the first time it converts Python values (``pa.array([...])``),
only to ask whether they are pandas objects. The lake writer never uses pandas, and pandas is installed in
every image (the BigQuery adapter needs it): loading it costs the writer ~33 MiB resident, a sixth of what it
holds before its first poll and half its smallest buffer budget. :func:`refuse_imports` makes such a library
look absent to this process, the way pyarrow expects when it is not installed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["RefusedImports", "refuse_imports"]


class RefusedImports:
    """A meta path finder that answers "no such module" for the named top-level packages and their modules."""

    def __init__(self, names: frozenset[str], why: str) -> None:
        self.names = names
        self.why = why

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is not loaded in this process: {self.why}", name=fullname)
        return None


def refuse_imports(*names: str, why: str) -> None:
    """From now on, importing any of ``names`` (top-level packages) in this process fails as if it were not
    installed, for the rest of the process. A package loaded already stays usable (an import finds it in
    ``sys.modules`` first): refusing it then saves nothing."""
    sys.meta_path.insert(0, RefusedImports(frozenset(names), why))
