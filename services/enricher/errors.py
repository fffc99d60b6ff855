"""The enricher's errors."""

from __future__ import annotations

from services.common.errors import CdcflowError

__all__ = ["EnricherError", "FencedError", "StoreError"]


class EnricherError(CdcflowError):
    """The enricher cannot go on."""


class FencedError(EnricherError):
    """Another instance started with the same transactional id: this one may commit nothing any more."""


class StoreError(EnricherError):
    """The local table store cannot be opened or written."""
