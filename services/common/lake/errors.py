"""Errors of the lake seam.

The lake writer and the loader react to the two marker bases, not to a backend's own exceptions: a
:class:`LakeTransientError` pauses and retries (network blips, throttling, a flaky disk), a
:class:`LakeTerminalError` stops the service because retrying cannot help (no permission, no bucket,
a hostile path).
"""

from services.common.errors import CdcflowError, TerminalError, TransientError

__all__ = [
    "LakeError",
    "LakeNotFoundError",
    "LakeTerminalError",
    "LakeTransientError",
    "LakeVersionChangedError",
    "UnsafePathError",
]


class LakeError(CdcflowError):
    """Base of every error a lake backend raises."""


class LakeTransientError(LakeError, TransientError):
    """The storage may accept the same call later: network errors, GCS 429/5xx, EIO-like local errors."""


class LakeTerminalError(LakeError, TerminalError):
    """The same call will fail again: authentication, permission, a missing bucket, a read-only disk."""


class LakeNotFoundError(LakeTerminalError):
    """The file does not exist (read, or move of a source that was never there)."""


class UnsafePathError(LakeTerminalError):
    """A path or name could escape the lake root or collide with the backend's own files."""


class LakeVersionChangedError(LakeError):
    """A conditional move found another version of the file than the one it was asked to move: the file was
    rewritten since it was read, so the newer version stays where it is (to be read again)."""
