"""`cdcflow stack` against real processes: idempotent up, clean down, recovery from kill -9."""

from __future__ import annotations

import os
import signal
import time

from services.stack.processes import pid_alive
from services.stack.runtime import Stack
from tests.fixtures.pipeline import wait_until


def _pids(stack: Stack) -> dict[str, int | None]:
    return {c.name: c.pid for c in stack.status() if c.name in {"postgres", "kafka", "connect"}}


def test_up_is_idempotent_and_down_leaves_nothing_behind(stack: Stack) -> None:
    before = _pids(stack)
    assert all(before.values()), before
    stack.up()
    assert _pids(stack) == before  # running components are left alone

    stack.down()
    assert not any(pid_alive(pid) for pid in before.values() if pid)
    assert all(not c.running for c in stack.status() if c.name in before)

    stack.postgres.start(timeout_s=60)  # look inside PostgreSQL alone: the slot must be gone
    try:
        assert stack.postgres.slots() == []
    finally:
        stack.postgres.stop()

    stack.up()  # the connector resumes with a new snapshot: its old slot is gone
    assert all(c.healthy for c in stack.status())
    # the new slot exists at once and is in use once the snapshot is done and streaming starts
    assert [name for name, _ in stack.postgres.slots()] == [stack.slot_name]
    wait_until("the slot to be streamed from", lambda: stack.postgres.slots() == [(stack.slot_name, True)])


def test_a_killed_component_is_restarted(stack: Stack) -> None:
    connect_pid = stack.connect.process.pid()
    assert connect_pid is not None
    os.kill(connect_pid, signal.SIGKILL)
    while pid_alive(connect_pid):
        time.sleep(0.05)
    status = {c.name: c for c in stack.status()}
    assert not status["connect"].running  # the stale PID file is recognised
    stack.up()
    assert stack.connect.process.pid() not in (None, connect_pid)
    assert all(c.healthy for c in stack.status())
