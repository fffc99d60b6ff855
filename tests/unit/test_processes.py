from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common.settings import repo_root
from services.stack.children import ServiceChild
from services.stack.errors import ComponentFailedError, StartTimeoutError
from services.stack.processes import (
    ManagedProcess,
    die_with_parent,
    ensure_port_free,
    pid_alive,
    runs_as,
    wait_for,
)


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


# --- children that die with their parent ------------------------------------------------------------------

_PARENT = """
import signal, subprocess, sys, time
from services.stack.processes import die_with_parent
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"], preexec_fn=die_with_parent(signal.{signal})
)
print(child.pid, flush=True)
time.sleep(120)
"""

_SERVICE_PARENT = """
import sys, time
from pathlib import Path
from services.stack.children import ServiceChild
child = ServiceChild("http.server", {}, Path(sys.argv[1]), ["--bind", "127.0.0.1", "0"])
child.start()
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_9_parent_of_child(script: str, *args: str) -> int:
    """Start ``script`` as a parent that prints its child's PID, kill -9 the parent; the child's PID."""
    with subprocess.Popen(
        [sys.executable, "-c", script, *args], cwd=repo_root(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert pid_alive(child)
        finally:
            parent.kill()
            parent.wait(timeout=30)
    return child


@pytest.mark.parametrize("death_signal", ["SIGTERM", "SIGKILL"])
def test_a_child_dies_when_its_parent_is_killed_9(death_signal: str) -> None:
    child = _kill_9_parent_of_child(_PARENT.format(signal=death_signal))
    try:
        assert _gone_within(child, 5), f"the child {child} outlived its parent"
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_service_child_dies_when_its_parent_is_killed_9(tmp_path: Path) -> None:
    child = _kill_9_parent_of_child(_SERVICE_PARENT, str(tmp_path / "child.log"))
    try:
        assert _gone_within(child, 5), f"the service child {child} outlived its parent"
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_died_before_it_was_armed_never_runs(tmp_path: Path) -> None:
    """The parent may die between fork and prctl: the child then sees another parent and exits."""
    ran = tmp_path / "ran"
    not_our_pid = 1  # stands for "the parent the child was started for", already gone
    child = subprocess.run(
        [sys.executable, "-c", f"open({str(ran)!r}, 'w').close()"],
        preexec_fn=die_with_parent(signal.SIGKILL, parent_pid=not_our_pid),
        check=False,
    )
    assert child.returncode != 0
    assert not ran.exists()


def test_each_service_gets_the_death_signal_of_its_kind(tmp_path: Path) -> None:
    def kind(module: str) -> signal.Signals:
        return ServiceChild(module, {}, tmp_path / "x.log").death_signal

    assert kind("services.consumer") == signal.SIGTERM  # drains: flushes and commits what it has
    assert kind("services.loader") == signal.SIGTERM
    assert kind("services.transform") == signal.SIGKILL  # a dbt run holding the DuckDB lock must end now


def test_a_process_whose_main_thread_exited_first_is_alive_while_its_other_threads_run() -> None:
    """A JVM's main thread may end before its shutdown hooks do; the kernel then shows the process's leader
    as a zombie while the process still runs and holds its ports. It is alive until its last thread ends."""
    code = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,)).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        stat = Path(f"/proc/{proc.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # the leader has exited
        assert pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(proc.pid)


def test_a_process_whose_command_line_is_gone_is_still_ours_while_it_runs(tmp_path: Path) -> None:
    """A process killed with SIGKILL, or whose main thread has ended, reads an empty command line while its
    other threads still hold its ports: it is still the process we started, not a stale PID."""
    marker = f"marker-{tmp_path.name}"
    code = (
        f"# {marker}\n"
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,)).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    process = _process(tmp_path, marker)
    process.pid_file.parent.mkdir(parents=True)
    process.pid_file.write_text(f"{proc.pid}\n")
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 10
        while cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cmdline.read_bytes() == b""  # the leader has given up its memory
        assert runs_as(proc.pid, marker)
        assert process.pid() == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert not runs_as(proc.pid, marker)
    assert process.pid() is None


def _parent(stat: Path) -> str:
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[1]
    except OSError:  # gone meanwhile
        return ""


def test_a_kernel_thread_is_never_taken_for_ours() -> None:
    kernel_threads = [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if _parent(stat) == "2"]
    assert kernel_threads, "no kernel thread visible in /proc"
    assert not any(runs_as(pid, "") for pid in kernel_threads[:20])
