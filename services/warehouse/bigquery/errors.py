"""Google's exceptions as the loader's: what a retry may fix and what it will not."""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as api
from google.auth import exceptions as auth

from services.common.errors import CdcflowError
from services.common.google_errors import TRANSIENT_API, TRANSIENT_NETWORK
from services.warehouse.errors import CorruptFileError, WarehouseBusyError, WarehouseError

__all__ = ["corrupt_file", "error_kind"]

# BigQuery's own transient errors; the reasons come from its error payloads.
_TRANSIENT_REASONS = frozenset(
    {"rateLimitExceeded", "quotaExceeded", "backendError", "internalError", "jobBackendError"}
)
_TRANSIENT_MESSAGES = ("concurrent update", "could not serialize access", "transaction is aborted")


def error_kind(exc: BaseException) -> type[CdcflowError] | None:
    """Which loader error a Google client exception means; ``None`` when it is not a BigQuery error.

    Transient (:class:`WarehouseBusyError`): 429 and 5xx, rate limits and quota (they reset), a transaction
    aborted by a concurrent one, the client's retries running out of time, network failures. Everything else
    the API refuses (bad SQL, a missing dataset, no permission) fails the same way again: :class:`WarehouseError`.
    """
    if isinstance(exc, (*TRANSIENT_API, *TRANSIENT_NETWORK)):
        return WarehouseBusyError
    if isinstance(exc, api.GoogleAPICallError):
        reasons = {str(e.get("reason", "")) for e in exc.errors if isinstance(e, dict)}
        transient = reasons & _TRANSIENT_REASONS or any(m in str(exc.message).lower() for m in _TRANSIENT_MESSAGES)
        return WarehouseBusyError if transient else WarehouseError
    if isinstance(exc, auth.GoogleAuthError):
        return WarehouseBusyError if getattr(exc, "retryable", False) else WarehouseError
    if isinstance(exc, api.GoogleAPIError):
        return WarehouseError
    return None


def corrupt_file(job: Any, exc: Exception, paths: dict[str, str]) -> CorruptFileError | None:
    """The lake file a failed load job could not read: one an error of reason ``invalid`` names (BigQuery's
    reason for data it cannot read). An error that names a file for another reason — no access to it, not
    found, a backend error — says nothing of its content: the file is not set aside for it."""
    if error_kind(exc) is not WarehouseError:  # transient: the same file loads on a later attempt
        return None
    errors = [*(getattr(exc, "errors", None) or []), *(getattr(job, "errors", None) or [])]
    invalid = [e for e in errors if isinstance(e, dict) and e.get("reason") == "invalid"]
    details = [" ".join(str(e.get(k, "")) for k in ("location", "message")) for e in invalid]
    for uri, path in paths.items():
        local_tail = uri.removeprefix("gs://")
        if any(uri in d or local_tail in d for d in details):
            reason = "; ".join(d.strip() for d in details if d.strip())
            return CorruptFileError(path, f"not loadable as Parquet of its table: {reason}")
    return None
