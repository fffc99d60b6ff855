"""`cdcflow deploy register` fails clearly when Connect is out of reach or there is nothing to register."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.common.settings import load_settings
from services.deploy.errors import DeployError
from services.deploy.register import register_all
from tests.fixtures.net import free_port


def test_an_unreachable_worker_is_a_named_error_after_the_timeout(tmp_path: Path) -> None:
    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "x.json").write_text('{"config": {"connector.class": "C"}}')
    settings = load_settings(
        {"CDCFLOW_CONNECT__URL": f"http://127.0.0.1:{free_port()}", "CDCFLOW_STACK__CONNECT_DIR": str(tmp_path)}
    )
    began = time.monotonic()
    with pytest.raises(DeployError, match=r"had no Debezium plugin after 2s"):
        register_all(settings, timeout_s=2)
    assert 2 <= time.monotonic() - began < 10


def test_no_connector_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "connectors").mkdir()
    settings = load_settings({"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path)})
    with pytest.raises(DeployError, match="no connector files"):
        register_all(settings, timeout_s=1)
