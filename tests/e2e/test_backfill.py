"""A table with existing rows captured while a workload writes to it, without restarting Connect.

``extra.accounts`` holds 100,000 rows in a source of its own and is not captured. While a workload updates,
inserts and deletes its rows and the lake writer runs, ``cdcflow source add-table`` adds it to the connector
(include list, publication, a PUT of the config: the task restarts, the worker does not) and asks for an
incremental snapshot of it. Then: the same request again runs no second snapshot; silver equals the source
(``verify``, zero drift); a re-snapshot changes nothing in silver; ``--where`` reads exactly the matching rows.

And a backfill while an update's commit is streamed but not yet visible (it waits for a synchronous standby):
the chunk's window waits for it, so the read carries the committed value instead of undoing the change. And
Kafka Connect killed with SIGKILL in the middle of a backfill under a workload: zero drift all the same.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import duckdb
import psycopg
import pytest

from services.stack.runtime import Stack
from tests.fixtures.cli import backfills, cdcflow, wait_backfills_completed
from tests.fixtures.pipeline import WriterProcess, partition_ends, read_partitions, wait_until
from tests.fixtures.source import IsolatedSource
from tests.fixtures.sync_standby import WaitingCommit, absent_synchronous_standby
from tests.fixtures.topics import TopicTail
from tests.fixtures.transform import describe

ROWS = 100_000
ACCOUNTS = f"""
create schema extra;
create table extra.accounts (
    id bigint primary key, owner text not null default 'new', balance numeric(14, 2) not null
);
insert into extra.accounts select g, 'owner ' || g, g * 1.25 from generate_series(1, {ROWS}) g;
"""
TABLES = ["extra.accounts"]


class _Workload(threading.Thread):
    """Updates, inserts and deletes on a table of ``rows`` rows (``id``, ``balance``) until stopped."""

    def __init__(self, dsn: str, table: str = "extra.accounts", rows: int = ROWS) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table, self.rows = dsn, table, rows
        self.stop, self.operations = threading.Event(), 0

    def run(self) -> None:
        update = f"update {self.table} set balance = balance + 1 where id = %s".encode()
        insert = f"insert into {self.table} (id, balance) values (%s, 1)".encode()
        delete = f"delete from {self.table} where id = %s".encode()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            n = 0
            while not self.stop.is_set():
                n += 1
                key = (n * 7919) % self.rows + 1
                conn.execute(update, (key,))
                if n % 5 == 0:
                    conn.execute(insert, (self.rows + n,))
                if n % 11 == 0:
                    conn.execute(delete, ((key * 13) % self.rows + 1,))
                self.operations += 1
                time.sleep(0.002)


def _silver_rows(path: Path) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute("select id, owner, balance from silver.accounts order by id").fetchall()


@pytest.mark.parametrize("isolated_source", [ACCOUNTS], indirect=True)
def test_a_table_added_while_written_is_backfilled_with_zero_drift(
    isolated_source: IsolatedSource, writer: WriterProcess, stack: Stack, tmp_path: Path
) -> None:
    settings = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path, lambda c: c.schema == "extra")
    cli_env = isolated_source.cli_env()
    dsn = settings.postgres.dsn()
    worker_pid = stack.connect.process.pid()

    writing = writer.start()
    workload = _Workload(dsn)
    workload.start()
    try:
        time.sleep(2)
        added = cdcflow(cli_env, "source", "add-table", "extra.accounts")
        assert "extra.accounts added to connector" in added
        assert "incremental snapshot" in added
        again = cdcflow(cli_env, "backfill", "start", "extra.accounts")  # the same request: no second snapshot
        assert "already requested" in again
        [snapshot] = wait_backfills_completed(cli_env, 1)
        time.sleep(2)
    finally:
        workload.stop.set()
        workload.join(timeout=30)
    assert writer.terminate(writing) == 0, writer.logs()[-3000:]
    assert workload.operations > 100
    assert stack.connect.process.pid() == worker_pid  # Connect was not restarted
    rows = snapshot["rows"]
    assert isinstance(rows, dict)
    assert rows["extra.accounts"] >= ROWS - workload.operations // 11

    report, _ = pipeline.settle(TABLES)
    assert not report.drift, describe(report)
    [accounts] = report.tables
    assert accounts.source_rows == accounts.silver_rows > ROWS - workload.operations // 11
    before = _silver_rows(pipeline.settings.duckdb_path())

    # a re-snapshot of a captured table: new read events, nothing changes in silver
    cdcflow(cli_env, "backfill", "start", "extra.accounts", "--again")
    wait_backfills_completed(cli_env, 2)
    report, _ = pipeline.settle(TABLES)
    assert not report.drift, describe(report)
    assert _silver_rows(pipeline.settings.duckdb_path()) == before

    # --where: exactly the matching rows are read
    topic = f"{settings.kafka.topic_prefix}.extra.accounts"
    start = partition_ends(settings, [topic])
    cdcflow(cli_env, "backfill", "start", "extra.accounts", "--where", "id % 7 = 0")
    wait_backfills_completed(cli_env, 3)
    end = partition_ends(settings, [topic])
    read = set()
    for message in read_partitions(settings, end):
        if (message.offset() or 0) >= start.get((topic, message.partition() or 0), 0):
            event = json.loads(message.value() or b"null")
            assert event["op"] == "r"
            read.add(event["after"]["id"])
    with psycopg.connect(dsn) as conn:
        matching = {r[0] for r in conn.execute("select id from extra.accounts where id % 7 = 0").fetchall()}
    assert read == matching

    # stop: a re-snapshot stopped right after it was asked for ends ABORTED, short of every row
    cdcflow(cli_env, "backfill", "start", "extra.accounts", "--again")
    cdcflow(cli_env, "backfill", "stop")

    def ended() -> bool:
        return len(snaps := backfills(cli_env)) == 4 and snaps[-1]["state"] in ("ABORTED", "COMPLETED")

    try:
        wait_until("the stopped backfill to end", ended, timeout_s=300, interval_s=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {backfills(cli_env)}") from None
    stopped = backfills(cli_env)[-1]
    assert stopped["state"] == "ABORTED", stopped


def _ledger(rows: int) -> str:
    """A captured table of ``rows`` rows at balance 0 (created before the connector: it snapshots them)."""
    return f"""
create table lending.ledger (id bigint primary key, balance bigint not null);
insert into lending.ledger select g, 0 from generate_series(1, {rows}) g;
"""


LEDGER_ROWS = 3_000


def _release_when_a_window_waits(
    admin_dsn: str, commit: WaitingCommit, released: threading.Event, done: threading.Event
) -> None:
    """Cancel the commit's wait for the standby (it becomes visible) once a snapshot window is held open for it."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        while not done.is_set():
            held = conn.execute(
                "select count(*) from pg_stat_activity where wait_event = 'PgSleep' "
                "and query ilike 'insert into %debezium_signal%'"
            ).fetchone()
            if held and held[0]:
                released.set()
                break
            time.sleep(0.05)
        conn.execute("select pg_cancel_backend(%s)", (commit.pid,))


@pytest.mark.parametrize("isolated_source", [_ledger(LEDGER_ROWS)], indirect=True)
def test_a_change_streamed_before_it_is_visible_is_not_undone_by_a_backfill(isolated_source: IsolatedSource) -> None:
    """PostgreSQL streams a commit before other queries see it. A chunk read meanwhile would read the row as it
    was and emit that after the change; the signal table's guard holds the window open until the commit is
    visible, so the read carries the committed value."""
    settings = isolated_source.settings
    dsn = settings.postgres.dsn()
    isolated_source.wait_captured()
    topic = f"{settings.kafka.topic_prefix}.lending.ledger"
    tail = TopicTail(settings, [topic], "backfill-in-flight")
    cli_env = isolated_source.cli_env()
    commit = WaitingCommit(dsn, "update lending.ledger set balance = 42 where id = 7")
    released, done = threading.Event(), threading.Event()
    releaser = threading.Thread(target=_release_when_a_window_waits, args=(dsn, commit, released, done))
    with psycopg.connect(dsn, autocommit=True) as admin, absent_synchronous_standby(admin):
        try:
            commit.start()
            commit.wait_committing(admin)
            tail.read_until(lambda events: any(e.value and e.value["op"] == "u" for e in events))
            invisible = admin.execute("select balance from lending.ledger where id = 7").fetchone()
            assert invisible == (0,), "the update is streamed but must not be visible yet"
            releaser.start()
            cdcflow(cli_env, "backfill", "start", "lending.ledger")
            wait_backfills_completed(cli_env, 1)
        finally:
            done.set()
            if releaser.is_alive():
                releaser.join(30)
            commit.release()
        assert admin.execute("select balance from lending.ledger where id = 7").fetchone() == (42,)
    events = tail.read_until(lambda events: sum(1 for e in events if e.value and e.value["op"] == "r") >= LEDGER_ROWS)
    seven = [(e.value["op"], e.value["after"]["balance"]) for e in events if e.value and e.value["after"]["id"] == 7]
    assert seven == [("u", 42), ("r", 42)], f"the read undid the change: {seven}"
    assert released.is_set(), "no snapshot window waited for the committing transaction"
    tail.close()


KILLED_ROWS = 20_000


@pytest.mark.parametrize("isolated_source", [_ledger(KILLED_ROWS)], indirect=True)
def test_a_backfill_through_a_killed_connect_worker_ends_with_zero_drift(
    isolated_source: IsolatedSource, writer: WriterProcess, stack: Stack, tmp_path: Path
) -> None:
    """Kafka Connect killed with SIGKILL as soon as an incremental snapshot's first reads reach Kafka, under a
    workload: started again, the connector resumes from its committed offsets; whatever it sends twice, silver
    equals the source."""
    settings = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path, lambda c: c.qualified_name == "lending.ledger")
    cli_env = isolated_source.cli_env()
    connectors = [stack.settings.connect.connector, settings.connect.connector]
    isolated_source.wait_captured()

    writing = writer.start()
    workload = _Workload(settings.postgres.dsn(), "lending.ledger", KILLED_ROWS)
    workload.start()
    try:
        tail = TopicTail(settings, [f"{settings.kafka.topic_prefix}.lending.ledger"], "backfill-killed")
        cdcflow(cli_env, "backfill", "start", "lending.ledger")
        tail.read_until(lambda events: any(e.value and e.value["op"] == "r" for e in events), timeout_s=120)
        tail.close()
        worker = stack.connect.process.pid()
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        try:
            wait_until("Kafka Connect to die", lambda: not stack.connect.process.running(), timeout_s=30)
        finally:
            stack.connect.start(stack.settings.stack.start_timeout_s)  # the stack is shared: never left down
        for name in connectors:
            stack.connect.wait_running(name, stack.settings.stack.start_timeout_s)
        [snapshot] = wait_backfills_completed(cli_env, 1)
    finally:
        workload.stop.set()
        workload.join(timeout=30)
    assert writer.terminate(writing) == 0, writer.logs()[-3000:]
    assert workload.operations > 100
    rows = snapshot["rows"]
    assert isinstance(rows, dict), snapshot
    assert rows["lending.ledger"] > 0, snapshot
    report, _ = pipeline.settle(["lending.ledger"])
    assert not report.drift, describe(report)
    [ledger] = report.tables
    assert ledger.source_rows == ledger.silver_rows > KILLED_ROWS - workload.operations // 11
