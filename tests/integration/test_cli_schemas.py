"""`cdcflow schemas generate|check` against the live catalog of the stack's PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.common.contracts import load_contracts
from services.common.settings import Settings
from services.stack.runtime import Stack

CDCFLOW = str(Path(sys.executable).with_name("cdcflow"))


def _schemas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CDCFLOW, "schemas", *args], capture_output=True, text=True, timeout=120, check=False)


def test_generate_writes_the_repository_contracts_and_check_refuses_a_breaking_change(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    generated = _schemas("generate", "--directory", str(tmp_path))
    assert generated.returncode == 0, generated.stderr[-2000:]
    assert load_contracts(tmp_path) == load_contracts(settings.writer.contracts_dir)  # the repository is current

    assert _schemas("check").returncode == 0
    assert _schemas("check", "--directory", str(tmp_path)).returncode == 0

    path = tmp_path / "lending.customers.avsc"
    document = json.loads(path.read_text())
    key = next(f for f in document["fields"] if f["name"] == "customer_id")
    key["type"], key["cdcflow.semantic"] = "int", "int32"  # PostgreSQL has bigint: narrowing breaks readers
    path.write_text(json.dumps(document))
    broken = _schemas("check", "--directory", str(tmp_path))
    assert broken.returncode == 1
    assert "lending.customers: INCOMPATIBLE" in broken.stdout

    path.unlink()
    missing = _schemas("check", "--directory", str(tmp_path))
    assert missing.returncode == 1
    assert "lending.customers has no contract" in missing.stdout
