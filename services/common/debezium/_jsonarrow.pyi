"""Types of the native reader built from ``native/jsonarrow`` (Rust)."""

from typing import Any

class ReaderError(RuntimeError):
    """The reader failed inside itself on a call (a bug, not the input's fault): nothing was read."""

class Reader:
    def __init__(self, spec: tuple[Any, ...], envelope: str | None = None) -> None: ...
    def read(
        self,
        values: tuple[memoryview | None, memoryview, memoryview, int, int],
        start: int,
        max_bytes: int,
    ) -> tuple[int, str | None, tuple[Any, ...], bytes | None]: ...
