"""``cdcflow connector status|restart`` against the stack's Kafka Connect.

The shared connector is only read; the restart goes to a throw-away connector of this test: a slot of its own
on an empty publication and no snapshot, so it writes no topic and is removed without a trace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from services.common.settings import Settings
from services.stack.connect import load_connector
from services.stack.processes import wait_for
from services.stack.runtime import Stack

CDCFLOW = str(Path(sys.executable).with_name("cdcflow"))


def _cdcflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CDCFLOW, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def throwaway(stack: Stack, settings: Settings, pg: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    name = f"it_restart_{uuid.uuid4().hex[:8]}"
    pg.execute(f'create publication "{name}"'.encode())  # no tables: the connector streams nothing
    config = load_connector(settings.stack.connect_dir, settings.connect.connector)
    for key in (
        "heartbeat.interval.ms",
        "heartbeat.action.query",
        "signal.data.collection",
        "notification.enabled.channels",
    ):
        config.pop(key, None)
    config.update(
        {
            "name": name,
            "topic.prefix": name,
            "slot.name": name,
            "publication.name": name,
            "publication.autocreate.mode": "disabled",
            "snapshot.mode": "no_data",
            "table.include.list": r"cdcflow\.nothing",
        }
    )
    stack.connect.put(name, config)
    try:
        stack.connect.wait_running(name, timeout_s=120)
        yield name
    finally:
        stack.connect.delete(name)
        wait_for(f"slot {name} released", lambda: not any(s == name and a for s, a in stack.postgres.slots()), 60)
        pg.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s", (name,))
        pg.execute(f'drop publication if exists "{name}"'.encode())


def test_status_of_the_shared_connector_reads_running(stack: Stack, settings: Settings) -> None:
    done = _cdcflow("connector", "status", settings.connect.connector, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    [state] = json.loads(done.stdout)
    assert (state["name"], state["state"], state["healthy"]) == (settings.connect.connector, "RUNNING", True)
    assert [t["state"] for t in state["tasks"]] == ["RUNNING"]
    missing = _cdcflow("connector", "status", "no_such_connector")
    assert missing.returncode == 1
    assert "MISSING" in missing.stdout


def test_restart_brings_a_connector_back_running(stack: Stack, throwaway: str) -> None:
    before = stack.connect.connector_status(throwaway)
    assert before is not None
    done = _cdcflow("connector", "restart", throwaway)
    assert done.returncode == 0, done.stderr[-2000:]
    assert throwaway in done.stdout
    assert "RESTARTING" in done.stdout  # Connect's answer: the connector and its task are being restarted
    stack.connect.wait_running(throwaway, timeout_s=120)
    nothing_failed = _cdcflow("connector", "restart", throwaway, "--failed-only")
    assert nothing_failed.returncode == 0, nothing_failed.stderr[-2000:]
    assert "RESTARTING" not in nothing_failed.stdout  # nothing had failed: nothing restarts
    listed = _cdcflow("connector", "status", "--json")
    names = {s["name"] for s in json.loads(listed.stdout)}
    assert throwaway in names
    stack.connect.wait_running(throwaway, timeout_s=60)
    assert _cdcflow("connector", "status", throwaway).returncode == 0
