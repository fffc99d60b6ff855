"""`cdcflow deploy register` (Compose's one-shot service) against the real Connect worker of the local stack:
the connector files are PUT idempotently and the command returns once each connector runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from services.common.settings import Settings
from services.stack.runtime import Stack

CDCFLOW = str(Path(sys.executable).with_name("cdcflow"))


def test_register_puts_the_connector_files_and_waits_until_they_run(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    # The running connector's own config as the file: the PUT changes nothing on the shared stack, even when
    # the repository's connector file has moved on since the stack registered it.
    before = httpx.get(f"{settings.connect.url}/connectors/lending/config", timeout=10).json()
    (tmp_path / "connectors").mkdir()
    config = {k: v for k, v in before.items() if k != "name"}
    (tmp_path / "connectors" / "lending.json").write_text(json.dumps({"name": "lending", "config": config}))
    env = {**os.environ, "CDCFLOW_STACK__CONNECT_DIR": str(tmp_path), "CDCFLOW_LOG__FORMAT": "json"}
    done = subprocess.run(
        [CDCFLOW, "deploy", "register", "--timeout", "60"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "running: lending" in done.stdout
    status = httpx.get(f"{settings.connect.url}/connectors/lending/status", timeout=10).json()
    assert status["connector"]["state"] == "RUNNING"
    assert httpx.get(f"{settings.connect.url}/connectors/lending/config", timeout=10).json() == before
