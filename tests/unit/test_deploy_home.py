"""A non-editable install (the container image, a wheel) finds connect/, schemas/ and dbt/ through CDCFLOW_HOME."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.common.settings import HOME_ENV, load_settings, repo_root

CHECKOUT = Path(__file__).resolve().parents[2]


def test_a_checkout_is_its_own_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert repo_root() == CHECKOUT
    assert load_settings({}).writer.contracts_dir == CHECKOUT / "schemas"


def test_cdcflow_home_moves_every_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shutil.copytree(CHECKOUT / "schemas", tmp_path / "schemas")
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    settings = load_settings({})
    assert repo_root() == tmp_path.resolve()
    assert settings.writer.contracts_dir == tmp_path / "schemas"
    assert settings.loader.contracts_dir == tmp_path / "schemas"
    assert settings.transform.project_dir == tmp_path / "dbt"
    assert settings.stack.connect_dir == tmp_path / "connect"


def test_cdcflow_home_is_not_read_as_a_setting() -> None:
    # `extra="ignore"` would hide it anyway; the point is that it never becomes a section called "home"
    settings = load_settings({HOME_ENV: "/opt/cdcflow", "CDCFLOW_KAFKA__TOPIC_PARTITIONS": "3"})
    assert settings.kafka.topic_partitions == 3
    assert "home" not in settings.model_dump()
