"""A cdcflow service (``python -m services.<name>``) as a child process of the demo, a benchmark or a test.

The child gets a session of its own, so a Ctrl-C in the terminal reaches only the parent, which then stops
it with SIGTERM (the service drains and exits 0) or, in chaos tests, with SIGKILL. Its JSON log lines go
to a file, where the parent reads the events it needs (``transform.run``, ``loader.loaded``, …).

A child never outlives its parent, however the parent ends (``kill -9`` included): the kernel sends it a
signal chosen per kind of service (:func:`death_signal`) when the parent goes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.common.settings import Settings
from services.stack.processes import die_with_parent

__all__ = ["ServiceChild", "death_signal", "service_env"]

# The transform runs dbt in its own process (dbtRunner), and a SIGTERM is only seen between runs: a
# ``dbt build`` goes on to its end — minutes on a large project — with the DuckDB file locked, and no parent
# is left to wait for its result. Killed, each statement it ran is committed or not at all (DuckDB's WAL)
# and the next run builds again what this one did not.
_KILLED_WITH_PARENT = frozenset({"services.transform"})


def death_signal(module: str) -> signal.Signals:
    """What a service child gets when its parent dies.

    SIGTERM where the service can drain (the writer flushes and commits, the loader ends its transaction);
    SIGKILL for the transform, whose running ``dbt build`` holds the warehouse's lock and must end now.
    """
    return signal.SIGKILL if module in _KILLED_WITH_PARENT else signal.SIGTERM


def service_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a child that uses the same stack, lake and warehouse as ``settings``.

    The parent's variables are kept (credentials, Kafka extras, …); the locations a parent may have changed
    in code are set explicitly, health endpoints are off (several children would race for the port) and logs
    are JSON lines. ``overrides`` are ``CDCFLOW_…`` variables set last.
    """
    return {
        **os.environ,
        "CDCFLOW_POSTGRES__HOST": settings.postgres.host,
        "CDCFLOW_POSTGRES__PORT": str(settings.postgres.port),
        "CDCFLOW_POSTGRES__DATABASE": settings.postgres.database,
        "CDCFLOW_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "CDCFLOW_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "CDCFLOW_STACK__STATE_DIR": str(settings.stack.state_dir),
        "CDCFLOW_LAKE__ROOT": settings.lake_root(),
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(settings.duckdb_path()),
        "CDCFLOW_WRITER__GROUP_ID": settings.writer.group_id,
        "CDCFLOW_WRITER__HEALTH_PORT": "0",
        "CDCFLOW_LOADER__HEALTH_PORT": "0",
        "CDCFLOW_TRANSFORM__HEALTH_PORT": "0",
        "CDCFLOW_LOG__FORMAT": "json",
        **overrides,
    }


class ServiceChild:
    """One run of ``python -m <module> <args>``; start it again for a new process (a restart)."""

    def __init__(self, module: str, env: Mapping[str, str], log_file: Path, args: Sequence[str] = ()) -> None:
        self.module = module
        self.env = dict(env)
        self.log_file = log_file
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop_sent = False
        self._log_offset = 0  # where this run's lines begin in a log shared with earlier runs
        self.death_signal = death_signal(module)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> subprocess.Popen[bytes]:
        """A new process, tied to this one: call it from the main thread or from a thread that outlives it
        (the kernel signals the child when the thread that started it ends, see ``die_with_parent``)."""
        if self.running():
            raise RuntimeError(f"{self.module} is already running (pid {self.pid})")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._stop_sent = False
        with self.log_file.open("ab") as log:
            self._log_offset = log.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # the hook takes no lock and imports nothing, so threads of this process cannot block it
                preexec_fn=die_with_parent(self.death_signal),  # noqa: PLW1509
            )
        return self.proc

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request_stop(self) -> None:
        """SIGTERM without waiting: the service finishes what it is doing and exits.

        Sent once: a second signal would make the service abort instead of finishing.
        """
        if self.running() and self.proc is not None and not self._stop_sent:
            self.proc.send_signal(signal.SIGTERM)
            self._stop_sent = True

    def stop(self, grace_s: float = 60.0) -> int | None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. The exit status (None if it never started)."""
        if self.proc is None:
            return None
        self.request_stop()
        try:
            return self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """``kill -9``: no chance to flush, commit or clean up."""
        assert self.proc is not None, "not started"
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def log_text(self) -> str:
        """What the current (or last) run has logged."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def events(self, name: str) -> list[dict[str, Any]]:
        """The current run's JSON log lines whose ``event`` is ``name``, oldest first."""
        found: list[dict[str, Any]] = []
        marker = f'"event": "{name}"'
        for line in self.log_text().splitlines():
            if marker not in line:
                continue
            try:
                document = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if isinstance(document, dict) and document.get("event") == name:
                found.append(document)
        return found
