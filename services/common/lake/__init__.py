"""The lake seam: where the lake writer puts Parquet files and the loader lists, reads and moves them.

Backends: :class:`LocalLake` (a directory, the embedded default) and ``services.common.lake.gcs.GcsLake``
(a GCS bucket), which is not imported here because it pulls in the Google client; :func:`open_lake`
builds either from settings.
"""

from services.common.lake.base import PARQUET_CONTENT_TYPE, Lake, LakeFile
from services.common.lake.errors import (
    LakeError,
    LakeNotFoundError,
    LakeTerminalError,
    LakeTransientError,
    LakeVersionChangedError,
    UnsafePathError,
)
from services.common.lake.factory import LakeOpener, open_lake, parse_gcs_root
from services.common.lake.layout import FileSlot, LakeLayout, NotALakeFileError
from services.common.lake.local import LocalLake
from services.common.lake.paths import (
    is_safe_relative_path,
    is_valid_bucket_name,
    validate_prefix,
    validate_relative_path,
)

__all__ = [
    "PARQUET_CONTENT_TYPE",
    "FileSlot",
    "Lake",
    "LakeError",
    "LakeFile",
    "LakeLayout",
    "LakeNotFoundError",
    "LakeOpener",
    "LakeTerminalError",
    "LakeTransientError",
    "LakeVersionChangedError",
    "LocalLake",
    "NotALakeFileError",
    "UnsafePathError",
    "is_safe_relative_path",
    "is_valid_bucket_name",
    "open_lake",
    "parse_gcs_root",
    "validate_prefix",
    "validate_relative_path",
]
