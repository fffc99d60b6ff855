"""The lake in a local directory: the embedded default.

A write goes to a temp file in the target's own folder, is flushed and fsynced, then ``os.replace``\\ d over
the target and the folder is fsynced, so after a crash a reader finds the old complete file or the new
one, and a committed offset never points at data that only lived in the page cache. Temp files start with
``.tmp-``; a crash can leave one behind, and listings never show it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from operator import attrgetter
from pathlib import Path
from urllib.parse import quote

from services.common.lake.base import LakeFile
from services.common.lake.errors import (
    LakeError,
    LakeNotFoundError,
    LakeTerminalError,
    LakeTransientError,
    LakeVersionChangedError,
    UnsafePathError,
)
from services.common.lake.paths import (
    MAX_SEGMENT_BYTES,
    is_safe_relative_path,
    is_safe_segment,
    validate_prefix,
    validate_relative_path,
)

__all__ = ["TEMP_PREFIX", "LocalLake", "os_error_kind"]

TEMP_PREFIX = ".tmp-"

# Errors a later attempt may not hit: flaky or busy devices, full disks someone can free, stale NFS handles.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.ENOLCK,
    }
)


class LocalLake:
    """A lake rooted at a local directory (created if missing); see :class:`~services.common.lake.base.Lake`."""

    def __init__(self, root: Path) -> None:
        with _os_errors("create the lake root", str(root)):
            root.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
            self._root = root.resolve(strict=True)

    @property
    def root(self) -> Path:
        """The resolved root directory."""
        return self._root

    def write(self, path: str, data: bytes) -> LakeFile:
        target = self._target(path)
        with _os_errors("write", path, missing=LakeTerminalError):
            _make_dirs(target.parent)
            stat = _replace_atomically(target, data)
            _fsync_dir(target.parent)
        return LakeFile(path=path, size=stat.st_size, version=str(stat.st_mtime_ns))

    def write_if(self, path: str, data: bytes, *, version: str | None) -> LakeFile:
        target = self._target(path)
        with _os_errors("write", path, missing=LakeTerminalError):
            _make_dirs(target.parent)
            # processes of one machine share the local lake: an advisory lock beside the file makes the
            # check and the replace one step for every caller of write_if
            lock = target.with_name(f"{TEMP_PREFIX}lock-{target.name}"[:MAX_SEGMENT_BYTES])
            with os.fdopen(os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)) as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                found = _lake_file(path, target).version if target.is_file() else None
                if found != version:
                    raise LakeVersionChangedError(f"local lake: {path!r} is version {found} now, not {version}")
                stat = _replace_atomically(target, data)
                _fsync_dir(target.parent)
        return LakeFile(path=path, size=stat.st_size, version=str(stat.st_mtime_ns))

    def read(self, path: str) -> bytes:
        target = self._target(path)
        with _os_errors("read", path):
            return target.read_bytes()

    def list(self, prefix: str = "") -> Iterator[LakeFile]:
        validate_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        start = self._target(folder) if folder else self._root
        return self._list(start, folder, prefix)

    def delete(self, path: str) -> None:
        target = self._target(path)
        with _os_errors("delete", path):
            try:
                target.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return
            _fsync_dir(target.parent)

    def move(self, src: str, dst: str, *, version: str | None = None) -> LakeFile:
        if src == dst:
            raise ValueError(f"cannot move {src!r} onto itself")
        source, target = self._target(src), self._target(dst)
        with _os_errors("move", f"{src} -> {dst}"):
            if not source.is_file():
                return self._already_moved(src, dst, target)
            if version is not None and (found := _lake_file(src, source).version) != version:
                # a rename cannot be made conditional here: the window left is this check, not a load
                raise LakeVersionChangedError(f"local lake: {src!r} is version {found} now, not {version}")
            _make_dirs(target.parent)
            os.replace(source, target)
            _fsync_dir(target.parent)
            if source.parent != target.parent:
                _fsync_dir(source.parent)
            return _lake_file(dst, target)

    def uri(self, path: str) -> str:
        # Lake paths need no escaping ('=' and '$' stay readable for DuckDB and BigQuery); the root may.
        return "file://" + quote(str(self._target(path)), safe="/=$")

    def exists(self, path: str) -> bool:
        target = self._target(path)
        with _os_errors("stat", path):
            return target.is_file()

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    def _target(self, path: str) -> Path:
        """The absolute file for ``path``, refusing anything that resolves outside the root (symlinks)."""
        validate_relative_path(path)
        try:
            resolved = self._root.joinpath(*path.split("/")).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise UnsafePathError(f"unsafe lake path {path!r}: it cannot be resolved ({exc})") from exc
        if resolved == self._root or not resolved.is_relative_to(self._root):
            raise UnsafePathError(f"unsafe lake path {path!r}: it resolves to {resolved}, outside {self._root}")
        return resolved

    def _list(self, start: Path, folder: str, prefix: str) -> Iterator[LakeFile]:
        # Folder-by-folder order is not path order ('a.b/x' sorts before 'a/x'), so collect, then sort.
        with _os_errors("list", prefix):
            found = sorted(_scan(start, folder), key=attrgetter("path"))
        yield from (file for file in found if file.path.startswith(prefix))

    def _already_moved(self, src: str, dst: str, target: Path) -> LakeFile:
        """A retried move finds ``src`` gone and ``dst`` present: the first attempt completed."""
        if target.is_file():
            return _lake_file(dst, target)
        raise LakeNotFoundError(f"local lake: move {src!r} -> {dst!r} failed: no such file {src!r}")


def _scan(directory: Path, rel_dir: str) -> list[LakeFile]:
    """Every listable file below ``directory``: symlinks never followed, dot-names never listed, and nothing
    under a name :func:`validate_relative_path` would refuse (each folder's name is checked once, not again
    in the path of every file it holds)."""
    if rel_dir and not is_safe_relative_path(rel_dir):
        return []
    found: list[LakeFile] = []
    folders = [(str(directory), rel_dir)]
    while folders:
        folder, rel_folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                items = list(entries)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in items:
            if not is_safe_segment(entry.name):  # dot-names (the backends' temp files) included
                continue
            rel = f"{rel_folder}/{entry.name}" if rel_folder else entry.name
            if entry.is_dir(follow_symlinks=False):
                folders.append((entry.path, rel))
            elif entry.is_file(follow_symlinks=False):
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted or moved while we listed
                    continue
                found.append(LakeFile(path=rel, size=stat.st_size, version=str(stat.st_mtime_ns)))
    return found


# Lake files hold the source's rows, personal data included: readable by their owner and group (a loader
# running as another user of the group), never by everyone. The process umask can only narrow these.
FILE_MODE = 0o640
FOLDER_MODE = 0o750


def _replace_atomically(target: Path, data: bytes) -> os.stat_result:
    """Write a durable temp file next to ``target`` and rename it over ``target``; return its stat."""
    temp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:16]}-{target.name}"[:MAX_SEGMENT_BYTES])
    try:
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb") as handle:
            handle.write(data)
            handle.flush()
            _stamp(handle.fileno(), target)
            os.fsync(handle.fileno())
            stat = os.fstat(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with suppress(OSError):
            temp.unlink()
        raise
    return stat


def _stamp(fd: int, target: Path) -> None:
    """Give the new content an mtime later than the file it replaces, so its version always changes.

    Kernels stamp files from a coarse clock (milliseconds), which two quick writes of one path can share.
    """
    try:
        previous = target.stat().st_mtime_ns
    except FileNotFoundError:
        previous = 0
    mtime = max(time.time_ns(), previous + 1)
    os.utime(fd, ns=(mtime, mtime))


def _make_dirs(directory: Path) -> None:
    """``mkdir -p`` that fsyncs each new folder's parent, so the new path itself survives a crash."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        with suppress(FileExistsError):  # another writer was first
            folder.mkdir(mode=FOLDER_MODE)
        _fsync_dir(folder.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist a folder's entries (a rename or a new name is durable only once its folder is synced)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lake_file(path: str, full: Path) -> LakeFile:
    stat = full.stat()
    return LakeFile(path=path, size=stat.st_size, version=str(stat.st_mtime_ns))


@contextmanager
def _os_errors(operation: str, path: str, missing: type[LakeError] = LakeNotFoundError) -> Iterator[None]:
    """Turn ``OSError`` into the lake's errors, keeping the cause chained.

    ``missing`` is what a missing file or folder means: no such file for a read, a broken tree for a write.
    """
    try:
        yield
    except OSError as exc:
        kind = os_error_kind(exc, missing)
        raise kind(f"local lake: {operation} {path!r} failed: {exc.strerror or exc}") from exc


def os_error_kind(exc: OSError, missing: type[LakeError] = LakeNotFoundError) -> type[LakeError]:
    """Which lake error an ``OSError`` means: ``missing`` for absent files, transient for EIO-like errors."""
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError):
        return missing
    if exc.errno in _TRANSIENT_ERRNOS:
        return LakeTransientError
    return LakeTerminalError
