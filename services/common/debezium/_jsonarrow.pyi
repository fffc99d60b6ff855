"""Types of the native reader built from ``jsonarrow/`` (Rust)."""

from typing import Any

class Reader:
    def __init__(self, spec: tuple[Any, ...]) -> None: ...
    def read(self, values: list[bytes], start: int) -> tuple[int, str | None, tuple[Any, ...]]: ...
