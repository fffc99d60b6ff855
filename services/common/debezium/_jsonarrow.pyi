"""Types of the native reader built from ``jsonarrow/`` (Rust)."""

from typing import Any

class Reader:
    def __init__(self, spec: tuple[Any, ...], envelope: str | None = None) -> None: ...
    def read(
        self,
        values: tuple[memoryview | None, memoryview, memoryview, int, int],
        start: int,
        max_bytes: int,
    ) -> tuple[int, str | None, tuple[Any, ...], bytes | None]: ...
