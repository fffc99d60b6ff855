"""Test tiers come from folders: tests/unit, tests/integration, tests/e2e."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.stack",
    "tests.fixtures.pipeline",
    "tests.fixtures.schema_registry",  # before source, which imports it
    "tests.fixtures.source",
    "tests.fixtures.bqemulator",
    "tests.fixtures.standalone_connect",
]

_TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
