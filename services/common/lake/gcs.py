"""The lake in a Google Cloud Storage bucket, under an optional prefix.

A write is one ``upload_from_string``: GCS finalizes an object all at once, so readers see the old
generation or the new one, never a part. The generation is the file's version. GCS has no rename, so a
move is a copy of one generation followed by a delete of that same generation. Listings come back in
lexicographic name order, which is path order, so they stream instead of being sorted in memory.

This module imports the heavy Google client; ``services.common.lake`` never imports it eagerly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from google.api_core import exceptions as api
from google.auth import exceptions as auth
from google.cloud import storage
from google.cloud.storage import exceptions as media
from google.cloud.storage.retry import DEFAULT_RETRY

from services.common.google_errors import TRANSIENT_API, TRANSIENT_NETWORK
from services.common.lake.base import PARQUET_CONTENT_TYPE, LakeFile
from services.common.lake.errors import (
    LakeError,
    LakeNotFoundError,
    LakeTerminalError,
    LakeTransientError,
    LakeVersionChangedError,
    UnsafePathError,
)
from services.common.lake.paths import (
    is_safe_relative_path,
    is_valid_bucket_name,
    validate_prefix,
    validate_relative_path,
)

__all__ = ["GcsLake", "gcs_error_kind"]

_MAX_OBJECT_NAME_BYTES = 1024
_LIST_FIELDS = "items(name,size,generation),nextPageToken"
_TRANSIENT_NETWORK = (
    *TRANSIENT_NETWORK,
    requests.exceptions.ChunkedEncodingError,
    media.DataCorruption,  # checksum mismatch in transit
    media.InvalidResponse,
)
_REQUEST_TIMEOUT = 408
DEFAULT_RETRY_DEADLINE_S = 120.0  # the storage client's own default


def gcs_error_kind(exc: BaseException) -> type[LakeError] | None:
    """Which lake error a Google client exception means; ``None`` for exceptions that are not storage errors.

    ``NotFound`` maps to :class:`LakeNotFoundError`; :class:`GcsLake` refines it to a terminal error when
    the bucket itself is missing.
    """
    if isinstance(exc, api.NotFound):
        return LakeNotFoundError
    if isinstance(exc, TRANSIENT_API) or (isinstance(exc, api.GoogleAPICallError) and exc.code == _REQUEST_TIMEOUT):
        return LakeTransientError
    if isinstance(exc, api.GoogleAPIError):  # Unauthorized, Forbidden, BadRequest, …: the same call fails again
        return LakeTerminalError
    if isinstance(exc, _TRANSIENT_NETWORK):
        return LakeTransientError
    if isinstance(exc, auth.GoogleAuthError):
        return LakeTransientError if exc.retryable else LakeTerminalError
    return None


class GcsLake:
    """A lake in ``gs://bucket/prefix``; see :class:`~services.common.lake.base.Lake`.

    The caller keeps ownership of ``client`` unless ``owns_client`` is set, in which case :meth:`close`
    closes it.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: storage.Client,
        *,
        owns_client: bool = False,
        retry_deadline_s: float = DEFAULT_RETRY_DEADLINE_S,
    ) -> None:
        if not is_valid_bucket_name(bucket):
            raise LakeTerminalError(f"{bucket!r} is not a valid GCS bucket name")
        prefix = prefix.removesuffix("/")
        if prefix:
            validate_relative_path(prefix)
        self._bucket_name = bucket
        self._prefix = f"{prefix}/" if prefix else ""
        self._client = client
        self._bucket = client.bucket(bucket)
        self._owns_client = owns_client
        # every call retries transient errors until this deadline, then raises LakeTransientError: the caller
        # (the writer pauses, the loader moves to its next table) decides what happens next
        self._retry = DEFAULT_RETRY.with_deadline(retry_deadline_s)

    def write(self, path: str, data: bytes) -> LakeFile:
        blob = self._bucket.blob(self._name(path))
        with self._translated("write", path):
            # Same name, same content on a retry: re-uploading is idempotent, so retrying is safe.
            blob.upload_from_string(data, content_type=_content_type(path), retry=self._retry)
        return _lake_file(path, blob)

    def write_if(self, path: str, data: bytes, *, version: str | None) -> LakeFile:
        blob = self._bucket.blob(self._name(path))
        generation = 0 if version is None else int(version)  # 0: only if no live object exists
        with self._translated("write", path):
            try:
                blob.upload_from_string(
                    data, content_type=_content_type(path), if_generation_match=generation, retry=self._retry
                )
            except api.PreconditionFailed as exc:
                raise LakeVersionChangedError(f"gcs lake: {path!r} is not at generation {version} now") from exc
        return _lake_file(path, blob)

    def read(self, path: str) -> bytes:
        blob = self._bucket.blob(self._name(path))
        with self._translated("read", path):
            return bytes(blob.download_as_bytes(retry=self._retry))

    def list(self, prefix: str = "") -> Iterator[LakeFile]:
        validate_prefix(prefix)
        return self._list(prefix)

    def delete(self, path: str) -> None:
        blob = self._bucket.blob(self._name(path))
        with self._translated("delete", path):
            try:
                blob.delete(retry=self._retry)
            except api.NotFound:
                return

    def move(self, src: str, dst: str, *, version: str | None = None) -> LakeFile:
        if src == dst:
            raise ValueError(f"cannot move {src!r} onto itself")
        source_name, target_name = self._name(src), self._name(dst)
        with self._translated("move", src):
            source = self._bucket.get_blob(source_name, retry=self._retry)
            if source is None:
                return self._already_moved(src, dst)
            if version is not None and str(source.generation) != version:
                raise LakeVersionChangedError(f"gcs lake: {src!r} is generation {source.generation}, not {version}")
            # the copy names its source generation and the delete is conditional on it: a generation written
            # meanwhile is neither archived nor deleted
            copied = self._bucket.copy_blob(
                source, self._bucket, target_name, source_generation=source.generation, retry=self._retry
            )
            self._delete_generation(source)
        return _lake_file(dst, copied)

    def uri(self, path: str) -> str:
        return f"gs://{self._bucket_name}/{self._name(path)}"

    def exists(self, path: str) -> bool:
        blob = self._bucket.blob(self._name(path))
        with self._translated("stat", path):
            return bool(blob.exists(retry=self._retry))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def _name(self, path: str) -> str:
        name = self._prefix + validate_relative_path(path)
        if len(name.encode()) > _MAX_OBJECT_NAME_BYTES:
            raise UnsafePathError(f"unsafe lake path {path!r}: the object name is over {_MAX_OBJECT_NAME_BYTES} bytes")
        return name

    def _list(self, prefix: str) -> Iterator[LakeFile]:
        with self._translated("list", prefix):
            blobs = self._client.list_blobs(
                self._bucket, prefix=self._prefix + prefix, fields=_LIST_FIELDS, retry=self._retry
            )
            for blob in blobs:
                path = blob.name[len(self._prefix) :]
                if is_safe_relative_path(path):  # objects written by other tools, folder placeholders
                    yield _lake_file(path, blob)

    def _already_moved(self, src: str, dst: str) -> LakeFile:
        """A retried move finds ``src`` gone and ``dst`` present: the first attempt completed."""
        target = self._bucket.get_blob(self._name(dst), retry=self._retry)
        if target is None:
            raise self._not_found("move", src)
        return _lake_file(dst, target)

    def _delete_generation(self, source: Any) -> None:
        """Delete only the generation that was copied: one written since stays and is listed as new."""
        try:
            source.delete(if_generation_match=source.generation, retry=self._retry)
        except (api.NotFound, api.PreconditionFailed):
            return

    @contextmanager
    def _translated(self, operation: str, path: str) -> Iterator[None]:
        """Raise lake errors instead of the client's, keeping the cause chained."""
        try:
            yield
        except LakeError:
            raise
        except api.NotFound as exc:
            raise self._not_found(operation, path) from exc
        except Exception as exc:
            kind = gcs_error_kind(exc)
            if kind is None:
                raise
            raise kind(f"gcs lake: {operation} {self._describe(path)} failed: {exc}") from exc

    def _not_found(self, operation: str, path: str) -> LakeError:
        """A 404 is a missing file, unless the whole bucket is missing (terminal: wrong configuration)."""
        if not self._bucket_exists():
            return LakeTerminalError(f"gcs lake: {operation} {self._describe(path)} failed: no such bucket")
        return LakeNotFoundError(f"gcs lake: {operation} {self._describe(path)} failed: no such file")

    def _bucket_exists(self) -> bool:
        try:
            return bool(self._bucket.exists(retry=self._retry))
        except Exception:  # cannot tell (network): report the file as missing rather than hide the 404
            return True

    def _describe(self, path: str) -> str:
        return f"gs://{self._bucket_name}/{self._prefix}{path}"


def _lake_file(path: str, blob: Any) -> LakeFile:
    return LakeFile(path=path, size=int(blob.size), version=str(blob.generation))


def _content_type(path: str) -> str:
    return PARQUET_CONTENT_TYPE if path.endswith(".parquet") else "application/octet-stream"
