"""Lake path safety: the checks that keep every call inside the root (the layout is in ``layout.py``).

Names come from the source database and from Kafka, so they are untrusted: a table called ``..`` or
``a/b`` must not be able to write outside its folder. Paths are also kept to a small character set
so that the same string is a valid local file name, a GCS object name and an unescaped URI.
"""

from __future__ import annotations

import re

from services.common.lake.errors import UnsafePathError

__all__ = [
    "MAX_SEGMENT_BYTES",
    "check_name",
    "is_safe_relative_path",
    "is_safe_segment",
    "is_valid_bucket_name",
    "validate_prefix",
    "validate_relative_path",
]

MAX_SEGMENT_BYTES = 255
"""The longest file or folder name common file systems accept."""

_MAX_NAME = (MAX_SEGMENT_BYTES - 1) // 2  # schema + "." + table must fit one segment
_NAME = re.compile(r"[A-Za-z0-9_$-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9_.=$-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9_.-]{1,220}[a-z0-9]")


def validate_relative_path(path: str) -> str:
    """Return ``path`` if it names a file strictly inside the lake root, else raise :class:`UnsafePathError`.

    Rejected: absolute paths, empty, ``.`` and ``..`` segments, backslashes, NUL and other control
    characters, segments starting with a dot (the backends reserve them for temp files) and characters
    outside ``[A-Za-z0-9_.=$-]``.
    """
    problem = _text_problem(path) or _path_problem(path)
    if problem is not None:
        raise UnsafePathError(f"unsafe lake path {path!r}: {problem}")
    return path


def is_safe_relative_path(path: str) -> bool:
    """Whether :func:`validate_relative_path` accepts ``path``; listings skip every name it rejects."""
    return (_text_problem(path) or _path_problem(path)) is None


def is_safe_segment(name: str) -> bool:
    """Whether ``name`` may be one segment of a path :func:`validate_relative_path` accepts: a path is safe
    exactly when each of its segments is, so a listing checks a folder's name once for all it holds."""
    return _segment_problem(name) is None


def is_valid_bucket_name(name: str) -> bool:
    """GCS bucket naming rules: 3 to 222 characters of ``a-z 0-9 _ . -``, starting and ending alphanumeric."""
    return bool(_BUCKET.fullmatch(name)) and ".." not in name


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a lake path: ``""``, or a safe path, optionally ending in ``/``.

    A prefix is matched as a plain string, like GCS does: ``dt=2024-01`` matches every day of January.
    """
    if prefix:
        body = prefix.removesuffix("/")
        problem = _text_problem(body) or _path_problem(body)
        if problem is not None:
            raise UnsafePathError(f"unsafe lake prefix {prefix!r}: {problem}")
    return prefix


def check_name(role: str, value: str) -> None:
    """One name from the source (topic prefix, schema, table) must be a single safe path component."""
    problem = _text_problem(value) or _name_problem(value)
    if problem is not None:
        raise UnsafePathError(f"unsafe {role} {value!r}: {problem}")


def _name_problem(name: str) -> str | None:
    if "/" in name:
        return "it contains '/'"
    if name.startswith("."):
        return "it starts with a dot"
    if not _NAME.fullmatch(name):
        return "it may hold only letters, digits, '_', '$' and '-'"
    if len(name) > _MAX_NAME:
        return f"it is longer than {_MAX_NAME} characters"
    return None


def _text_problem(text: str) -> str | None:
    if not text:
        return "it is empty"
    if "\x00" in text:
        return "it contains NUL"
    if "\\" in text:
        return "it contains a backslash"
    if _CONTROL.search(text):
        return "it contains a control character"
    return None


def _path_problem(path: str) -> str | None:
    if path.startswith("/"):
        return "it is absolute"
    return next((p for p in map(_segment_problem, path.split("/")) if p is not None), None)


def _segment_problem(segment: str) -> str | None:
    if not segment:
        return "it has an empty segment"
    if segment in {".", ".."}:
        return f"it has a {segment!r} segment"
    if segment.startswith("."):
        return f"segment {segment!r} starts with a dot"
    if not _SEGMENT.fullmatch(segment):
        return f"segment {segment!r} may hold only letters, digits and '_.=$-'"
    if len(segment.encode()) > MAX_SEGMENT_BYTES:
        return f"segment {segment[:20]!r}… is longer than {MAX_SEGMENT_BYTES} bytes"
    return None
