"""Debezium value conventions shared by every decoder: semantic types and the TOAST placeholder."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "UNAVAILABLE_VALUE",
    "days_to_date",
    "micros_to_datetime",
    "variable_scale_decimal",
]

UNAVAILABLE_VALUE = "__debezium_unavailable_value"
"""What Debezium sends for a TOASTed column the change did not touch (``unavailable.value.placeholder``)."""

_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def variable_scale_decimal(struct: dict[str, Any]) -> Decimal:
    """An unconstrained NUMERIC: ``{"scale": s, "value": base64(two's-complement big-endian unscaled)}``."""
    unscaled = int.from_bytes(base64.b64decode(struct["value"]), "big", signed=True)
    # Built from text: Decimal arithmetic (scaleb) would round to the context's 28 digits.
    return Decimal(f"{unscaled}E{-int(struct['scale'])}")


def days_to_date(days: int) -> date:
    """``io.debezium.time.Date``: days since the epoch."""
    return _EPOCH_DATE + timedelta(days=days)


def micros_to_datetime(micros: int) -> datetime:
    """``io.debezium.time.MicroTimestamp``: microseconds since the epoch, read as UTC."""
    return _EPOCH + timedelta(microseconds=micros)
