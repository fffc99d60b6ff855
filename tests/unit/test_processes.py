from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from services.stack.errors import ComponentFailedError, StartTimeoutError
from services.stack.processes import ManagedProcess, ensure_port_free, pid_alive, wait_for


def _process(tmp_path: Path, marker: str) -> ManagedProcess:
    return ManagedProcess("sleeper", tmp_path / "run" / "s.pid", tmp_path / "logs" / "s.log", marker)


def _sleeper(marker: str) -> list[str]:
    return [sys.executable, "-c", f"import time; print('{marker}', flush=True); time.sleep(60)"]


def test_start_stop_by_pid(tmp_path: Path) -> None:
    marker = f"marker-{tmp_path.name}"
    proc = _process(tmp_path, marker)
    pid = proc.start(_sleeper(marker))
    assert proc.pid() == pid
    assert pid_alive(pid)
    assert proc.start(_sleeper(marker)) == pid  # re-running does not start a second copy
    assert proc.stop(grace_s=5)
    assert not pid_alive(pid)
    assert not proc.pid_file.exists()
    assert not proc.stop()


def test_stale_pid_file_after_kill_9_is_cleared(tmp_path: Path) -> None:
    marker = f"marker-{tmp_path.name}"
    proc = _process(tmp_path, marker)
    pid = proc.start(_sleeper(marker))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert proc.pid() is None
    assert not proc.pid_file.exists()


def test_a_reused_pid_is_not_taken_for_ours(tmp_path: Path) -> None:
    proc = _process(tmp_path, "a-marker-nobody-has")
    proc.pid_file.parent.mkdir(parents=True)
    proc.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not our process
    assert proc.pid() is None
    assert not proc.pid_file.exists()


def test_wait_for_fails_fast_when_the_process_died(tmp_path: Path) -> None:
    with pytest.raises(ComponentFailedError, match="exited while starting; see"):
        wait_for("thing", lambda: False, 30, alive=lambda: False, log=tmp_path / "x.log")


def test_wait_for_times_out() -> None:
    with pytest.raises(StartTimeoutError, match="not ready after"):
        wait_for("thing", lambda: False, 0.3, interval_s=0.05)


def test_a_busy_port_is_reported_before_starting() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ComponentFailedError, match=f"127.0.0.1:{port} is already in use"):
            ensure_port_free("thing", "127.0.0.1", port)
    ensure_port_free("thing", "127.0.0.1", port)  # free again once closed
