"""Fault injection: a lake whose writes fail now and then, for chaos tests of everything above it.

Enabled with ``CDCFLOW_LAKE__FAULT_RATE`` (0 disables it). Half of the injected faults strike before the
file is written and half after it is durable, so both "nothing written" and "written, but the caller
never heard back" are exercised. Seeded, so a failing run can be replayed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from services.common.lake.base import Lake, LakeFile
from services.common.lake.errors import LakeTransientError

__all__ = ["FaultyLake"]


class FaultyLake:
    def __init__(self, inner: Lake, rate: float, seed: int = 0) -> None:
        if not 0 <= rate < 1:
            raise ValueError("the fault rate must be in [0, 1)")
        self._inner = inner
        self._rate = rate
        self._random = random.Random(seed)  # noqa: S311 - chaos, not secrets
        self.injected = 0

    def write(self, path: str, data: bytes) -> LakeFile:
        strike = self._random.random() < self._rate
        after = self._random.random() < 0.5
        if strike and not after:
            self._fail(path, "before the write")
        written = self._inner.write(path, data)
        if strike:
            self._fail(path, "after the write")
        return written

    def _fail(self, path: str, when: str) -> None:
        self.injected += 1
        raise LakeTransientError(f"injected fault {when} of {path}")

    def write_if(self, path: str, data: bytes, *, version: str | None) -> LakeFile:
        return self._inner.write_if(path, data, version=version)

    def read(self, path: str) -> bytes:
        return self._inner.read(path)

    def list(self, prefix: str = "") -> Iterator[LakeFile]:
        return self._inner.list(prefix)

    def delete(self, path: str) -> None:
        self._inner.delete(path)

    def move(self, src: str, dst: str, *, version: str | None = None) -> LakeFile:
        return self._inner.move(src, dst, version=version)

    def uri(self, path: str) -> str:
        return self._inner.uri(path)

    def exists(self, path: str) -> bool:
        return self._inner.exists(path)

    def close(self) -> None:
        self._inner.close()
