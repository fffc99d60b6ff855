"""Debezium change events: value conventions and batch decoding into typed Arrow tables."""

from services.common.debezium.values import (
    UNAVAILABLE_VALUE,
    days_to_date,
    micros_to_datetime,
    variable_scale_decimal,
)

__all__ = ["UNAVAILABLE_VALUE", "days_to_date", "micros_to_datetime", "variable_scale_decimal"]
