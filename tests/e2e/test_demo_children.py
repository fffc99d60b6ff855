"""``kill -9`` of ``cdcflow demo`` while its transform runs: no process of that demo is left.

The demo runs as a user types it, on a source of its own, with its own lake, warehouse and transform folder
under a folder of this test; that folder's path is in the environment of every process the demo starts, so
whatever is left of it afterwards is found by it. A transform that outlived the demo would keep the DuckDB
file locked, and every later load and verify on that warehouse would fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.stack.processes import pid_alive
from services.stack.runtime import Stack
from tests.fixtures.source import IsolatedSource

TRANSFORM_STARTED_TIMEOUT_S = 240.0
LEFT_BEHIND_AFTER_S = 5.0


def _processes_with(marker: str) -> dict[int, str]:
    """Live processes (other than this one) whose environment holds ``marker``: PID → command line."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker.encode() in environ and pid_alive(int(entry.name)):
            found[int(entry.name)] = cmdline
    return found


def _demo_env(source: IsolatedSource, folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        **source.env(),
        "CDCFLOW_LAKE__ROOT": str(folder / "lake"),
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(folder / "warehouse.duckdb"),
        "CDCFLOW_TRANSFORM__WORK_DIR": str(folder / "transform"),
        "CDCFLOW_LOG__FORMAT": "json",
    }


def _wait_for_the_transform_run(demo: subprocess.Popen[bytes], folder: Path, output: Path) -> None:
    """Until the demo's transform child runs dbt (dbt's log appears in the transform's folder)."""
    dbt_log = folder / "transform" / "logs" / "dbt.log"
    deadline = time.monotonic() + TRANSFORM_STARTED_TIMEOUT_S
    while time.monotonic() < deadline:
        assert demo.poll() is None, f"the demo exited with {demo.returncode}:\n{output.read_text()[-3000:]}"
        transform = [cmd for cmd in _processes_with(str(folder)).values() if "services.transform" in cmd]
        if transform and dbt_log.exists():
            return
        time.sleep(0.2)
    raise AssertionError(f"the demo's transform did not start dbt in time:\n{output.read_text()[-3000:]}")


def _wait_until_none_left(marker: str, seconds: float) -> dict[int, str]:
    deadline = time.monotonic() + seconds
    left = _processes_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _processes_with(marker)
    return left


def test_kill_9_of_the_demo_leaves_no_process_behind(
    stack: Stack, isolated_source: IsolatedSource, tmp_path: Path
) -> None:
    folder = tmp_path / "demo"
    output = tmp_path / "demo.out"
    cdcflow = Path(sys.executable).with_name("cdcflow")
    argv = [str(cdcflow), "demo", "--seconds", "600", "--rate", "20", "--transform-every", "5"]
    with output.open("wb") as out:
        demo = subprocess.Popen(
            argv, env=_demo_env(isolated_source, folder), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_the_transform_run(demo, folder, output)
        os.kill(demo.pid, signal.SIGKILL)
        demo.wait(timeout=30)
        left = _wait_until_none_left(str(folder), LEFT_BEHIND_AFTER_S)
        assert not left, f"left running {LEFT_BEHIND_AFTER_S:g}s after kill -9 of the demo: {left}"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=30)
        for pid in _processes_with(str(folder)):  # what this test's demo left, so no later test meets it
            os.kill(pid, signal.SIGKILL)
