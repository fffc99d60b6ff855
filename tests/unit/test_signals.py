"""SIGTERM has a deadline: a shutdown that finishes within the grace period exits as it chooses; one stuck past
it reports what was left and exits non-zero (real child processes, real signals)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from services.common.settings import repo_root
from services.common.signals import OVERDUE_EXIT

_CHILD = textwrap.dedent(
    """
    import sys, time
    from services.common.signals import Shutdown

    grace_s, work_s, arm_late = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "late"
    shutdown = Shutdown()
    shutdown.install()
    shutdown.on_overdue(lambda: print("left: orders[0] 100..199", flush=True))
    if not arm_late:
        shutdown.arm(grace_s)
    print("ready", flush=True)
    while not shutdown.requested:
        shutdown.wait(0.05)
    if arm_late:  # the signal came while the process was starting, before it knew its grace period
        shutdown.arm(grace_s)
    time.sleep(work_s)  # flushing, committing, leaving the group
    print("clean", flush=True)
    sys.exit(0)
    """
)


def _run(grace_s: float, work_s: float, *, arm: str = "early") -> tuple[int, str, float]:
    """The child's exit code, its output and how long it took after SIGTERM."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(grace_s), str(work_s), arm],
        cwd=repo_root(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"ready"
    child.send_signal(signal.SIGTERM)
    began = time.monotonic()
    out, _ = child.communicate(timeout=60)
    return child.returncode, out.decode(errors="replace"), time.monotonic() - began


def test_a_shutdown_within_the_grace_period_is_clean() -> None:
    code, out, _ = _run(grace_s=10, work_s=0.2)
    assert code == 0
    assert "clean" in out
    assert "shutdown.overdue" not in out


def test_a_shutdown_past_the_grace_period_says_what_was_left_and_exits_non_zero() -> None:
    code, out, took = _run(grace_s=0.5, work_s=30)
    assert code == OVERDUE_EXIT != 0
    assert "left: orders[0] 100..199" in out
    assert "shutdown.overdue" in out
    assert "clean" not in out
    assert took < 10  # the deadline, not the stuck work, ended it


def test_the_grace_period_counts_from_the_signal_even_when_armed_later() -> None:
    code, out, took = _run(grace_s=0.5, work_s=30, arm="late")
    assert code == OVERDUE_EXIT
    assert "left: orders[0] 100..199" in out
    assert took < 10
