"""Build the configured lake: the one place that knows every backend.

The Google client is imported only when the GCS backend is chosen, so the embedded default (a local
directory) never pays for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from services.common.errors import ConfigError
from services.common.lake.base import Lake
from services.common.lake.errors import UnsafePathError
from services.common.lake.local import LocalLake
from services.common.lake.paths import is_valid_bucket_name, validate_relative_path

if TYPE_CHECKING:
    from google.cloud import storage

    from services.common.settings import LakeSettings

__all__ = ["EMULATOR_PROJECT", "LakeOpener", "open_lake", "parse_gcs_root"]

EMULATOR_PROJECT = "cdcflow-local"
"""The project the client names when it talks to a storage emulator (which ignores it)."""


LakeOpener = Callable[["LakeSettings", str], Lake]
"""What :func:`open_lake` is: a service takes one to open its lake, so a test can hand it a wrapped lake."""


def open_lake(settings: LakeSettings, default_root: str) -> Lake:
    """The lake ``settings`` describe; ``default_root`` applies when ``settings.root`` is empty.

    Raises :class:`ConfigError` when the root does not fit the backend. The caller closes the lake.
    """
    root = settings.root or default_root
    if settings.backend == "local":
        return LocalLake(_local_root(root))
    bucket, prefix = parse_gcs_root(root)
    from services.common.lake.gcs import GcsLake

    return GcsLake(
        bucket,
        prefix,
        _gcs_client(settings.gcs_endpoint),
        owns_client=True,
        retry_deadline_s=settings.gcs_retry_deadline_s,
    )


def parse_gcs_root(root: str) -> tuple[str, str]:
    """``gs://bucket/optional/prefix`` → ``("bucket", "optional/prefix")``; anything else is a ConfigError."""
    parts = urlsplit(root)
    if parts.scheme != "gs" or parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigError(f"the gcs lake root must look like gs://bucket/optional/prefix, got {root!r}")
    if not is_valid_bucket_name(parts.netloc):
        raise ConfigError(f"the gcs lake root {root!r} does not name a valid bucket")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            validate_relative_path(prefix)
        except UnsafePathError as exc:
            raise ConfigError(f"the gcs lake root {root!r} has an unusable prefix: {exc}") from None
    return parts.netloc, prefix


def _local_root(root: str) -> Path:
    """A directory path, or a ``file://`` URI of one."""
    if not root:
        raise ConfigError("the local lake needs a root directory")
    parts = urlsplit(root)
    if parts.scheme == "file" and parts.netloc in {"", "localhost"}:
        return Path(unquote(parts.path))
    if "://" in root:
        raise ConfigError(f"the local lake root must be a directory, got {root!r} (gs:// needs the gcs backend)")
    return Path(root).expanduser()


def _gcs_client(endpoint: str | None) -> storage.Client:
    """The production client (application default credentials), or an anonymous one for an emulator."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    if endpoint is None:
        try:
            return storage.Client()
        except DefaultCredentialsError as exc:
            raise ConfigError(f"no Google credentials for the gcs lake: {exc}") from None
    parts = urlsplit(endpoint)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"the gcs endpoint must be an http(s) URL, got {endpoint!r}")
    from google.auth.credentials import AnonymousCredentials

    anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]  # google-auth leaves __init__ untyped
    return storage.Client(
        project=EMULATOR_PROJECT,
        credentials=anonymous,
        client_options={"api_endpoint": endpoint.rstrip("/")},
    )
