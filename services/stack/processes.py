"""Background processes tracked by PID files, and children that die with their parent.

A PID file can outlive its process (kill -9, reboot) and the PID can be reused by something else, so a
process counts as ours only while its command line still contains the marker we started it with.

Two kinds of processes are started here, on purpose with opposite lifetimes:

- :class:`ManagedProcess`: Kafka and Connect of the local stack (PostgreSQL is detached by ``pg_ctl``
  likewise). They are meant to outlive ``cdcflow stack up``: they run in their own session until
  ``cdcflow stack down`` stops them by PID.
- Everything else cdcflow starts (a service child of the demo, a benchmark or a test) must end when the
  process that started it ends, however it ends — ``kill -9`` included, where no ``finally`` runs. A
  surviving transform would keep DuckDB's file lock and every later load and verify would fail.
  :func:`die_with_parent` asks the kernel to signal such a child when its parent goes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.stack.errors import ComponentFailedError, StartTimeoutError

__all__ = ["ManagedProcess", "die_with_parent", "ensure_port_free", "pid_alive", "runs_as", "wait_for"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child we have not reaped yet is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state != "Z":
        return True
    # The leader thread of a process that is still running shows "Z" too once it has exited on its own (a
    # JVM's main thread while its shutdown hooks run): the process lives, and holds its ports, while any
    # other thread of it does.
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(death_signal: signal.Signals, *, parent_pid: int | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``death_signal`` when its parent ends.

    Linux's ``prctl(PR_SET_PDEATHSIG)``, set in the child between fork and exec; it survives the exec and
    works however the parent ends, ``kill -9`` included. ``parent_pid`` is the process whose death counts
    (default: the caller). Elsewhere there is no such call and ``None`` is returned (no ``preexec_fn``).

    Two limits of the kernel's notion of parent: it is the *thread* that forked, so start such children from
    a thread that lives as long as they should (the main thread, or the thread that owns them); and a parent
    that dies between the fork and the ``prctl`` would never signal, so the child compares its parent with
    the expected one after arming and exits at once, before running anything, if it was already orphaned.

    The function runs in the forked child of a possibly multi-threaded parent, where another thread's lock
    may be held forever: it imports nothing and takes no lock (``prctl`` is looked up here, in the parent).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    expected_parent = os.getpid() if parent_pid is None else parent_pid
    signal_number = int(death_signal)

    def arm() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != expected_parent:  # orphaned before arming: nobody will signal
            os._exit(1)

    return arm


def ensure_port_free(what: str, host: str, port: int) -> None:
    """Fail clearly when something else already listens where a component is about to."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            raise ComponentFailedError(
                f"cannot start {what}: {host}:{port} is already in use by another process "
                "(another cdcflow stack with a different state folder?); stop it or choose other ports"
            )


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


_PF_KTHREAD = 0x00200000  # <linux/sched.h>: the task is a kernel thread


def _kernel_thread(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return bool(int(fields[6]) & _PF_KTHREAD)  # field 9 of stat; the state is field 3


def runs_as(pid: int, marker: str) -> bool:
    """Whether ``pid`` is a live process started with ``marker`` in its command line.

    A process killed with SIGKILL gives up its memory, and with it its command line, before its other threads
    have closed its files: for that moment its command line reads empty while it still holds its ports. Such a
    process is still the one started; a PID reused by another process shows that one's command line (a kernel
    thread's is always empty)."""
    if not pid_alive(pid):
        return False
    cmdline = _cmdline(pid)
    return marker in cmdline if cmdline else not _kernel_thread(pid)


def wait_for(
    what: str,
    ready: Callable[[], bool],
    timeout_s: float,
    *,
    alive: Callable[[], bool] | None = None,
    log: Path | None = None,
    interval_s: float = 0.25,
) -> None:
    """Poll ``ready`` until it is true; fail fast if ``alive`` says the process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return
        hint = f"; see {log}" if log else ""
        if alive is not None and not alive():
            raise ComponentFailedError(f"{what} exited while starting{hint}")
        if time.monotonic() > deadline:
            raise StartTimeoutError(f"{what} was not ready after {timeout_s:.0f}s{hint}")
        time.sleep(interval_s)


@dataclass(frozen=True, slots=True)
class ManagedProcess:
    """One background process: its PID file, its log and the marker that identifies it."""

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def pid(self) -> int | None:
        """The PID if our process is running; a stale PID file is removed."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if runs_as(pid, self.marker):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        """Start ``argv`` detached (own session) with stdout and stderr appended to the log.

        Detached on purpose: a stack component outlives the command that started it (``cdcflow stack
        up``) and runs until ``cdcflow stack down``; it is not tied to its parent with
        :func:`die_with_parent`.
        """
        existing = self.pid()
        if existing is not None:
            return existing
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # posix_spawn rather than Popen: the process outlives this one, so there is no handle to keep.
        pid = os.posix_spawnp(
            argv[0],
            list(argv),
            {**os.environ, **(env or {})},
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(self.log_file), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
        self.pid_file.write_text(f"{pid}\n")
        _await_exec(pid, self.marker)
        return pid

    def stop(self, grace_s: float = 30.0) -> bool:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. Returns whether a process was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                _reap(pid)
                time.sleep(0.05)
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _await_exec(pid: int, marker: str, timeout_s: float = 10.0) -> None:
    """Wait until the new program's command line is visible.

    posix_spawn returns once the child has released the parent's memory, which the kernel does before it
    has placed the new argv; until then /proc/<pid>/cmdline reads empty and the process would not be
    recognised as ours. A child that exits at once is left for the caller's health check to report.
    """
    deadline = time.monotonic() + timeout_s
    while marker not in _cmdline(pid) and pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.005)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
