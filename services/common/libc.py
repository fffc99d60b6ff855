"""Which C library this process runs on: the memory tuning of the writer applies to glibc's allocator only."""

from __future__ import annotations

import os

__all__ = ["is_glibc"]


def is_glibc() -> bool:
    """True where the C library is glibc (musl, as in Alpine images, answers no)."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False
