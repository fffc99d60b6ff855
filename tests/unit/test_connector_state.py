"""``cdcflow connector``: Connect's status bodies become one state per connector and task, in a table and JSON."""

from __future__ import annotations

from rich.console import Console

from services.stack.connector_cli import states_table
from services.stack.connector_state import parse_status

_FAILED = {
    "name": "shop",
    "connector": {"state": "RUNNING", "worker_id": "10.0.0.1:8083"},
    "tasks": [
        {"id": 1, "state": "RUNNING", "worker_id": "10.0.0.2:8083"},
        {
            "id": 0,
            "state": "FAILED",
            "worker_id": "10.0.0.1:8083",
            "trace": "org.apache.kafka.connect.errors.ConnectException: slot is active\n\tat io.debezium…",
        },
    ],
    "type": "source",
}


def test_a_failed_task_makes_the_connector_unhealthy_and_shows_its_first_trace_line() -> None:
    state = parse_status("shop", _FAILED)
    assert not state.healthy
    assert [(t.task, t.state) for t in state.tasks] == [(0, "FAILED"), (1, "RUNNING")]
    assert state.tasks[0].error == "org.apache.kafka.connect.errors.ConnectException: slot is active"
    assert state.as_dict() == {
        "name": "shop",
        "state": "RUNNING",
        "worker": "10.0.0.1:8083",
        "healthy": False,
        "error": "",
        "tasks": [
            {
                "id": 0,
                "state": "FAILED",
                "worker": "10.0.0.1:8083",
                "error": "org.apache.kafka.connect.errors.ConnectException: slot is active",
            },
            {"id": 1, "state": "RUNNING", "worker": "10.0.0.2:8083", "error": ""},
        ],
    }


def test_running_connector_with_running_tasks_is_healthy_and_missing_one_is_not() -> None:
    running = {"name": "lending", "connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "RUNNING"}]}
    assert parse_status("lending", running).healthy
    assert not parse_status("lending", {**running, "tasks": []}).healthy  # no task: nothing streams
    missing = parse_status("gone", None)
    assert (missing.state, missing.healthy, missing.tasks) == ("MISSING", False, ())


def test_the_table_has_a_row_per_connector_and_per_task() -> None:
    out = Console(width=200, record=True)
    out.print(states_table([parse_status("shop", _FAILED)]))
    lines = [line for line in out.export_text().splitlines() if "8083" in line]
    assert len(lines) == 3
    assert "shop" in lines[0]
    assert "RUNNING" in lines[0]
    assert "FAILED" in lines[1]
    assert "slot is active" in lines[1]
