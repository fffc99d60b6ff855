"""``cdcflow backfill start`` refuses what Debezium would report as a completed snapshot of no row: a table the
source database does not hold, and one without a primary key (nothing reaches the signal table); and, unless
sent ``--unguarded``, one while the source's signal table lacks capture.sql's snapshot window guard, or the
guard cannot see other roles' sessions. The guard itself: a statement running for a minute holds it no longer
than its bound, and a commit streamed but not yet visible (a COMMIT or a COMMIT PREPARED waiting for a
synchronous standby) holds it until the commit is visible, whatever role asks for the window."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from services.common.settings import Settings
from services.stack.backfill import WINDOW_GUARD
from services.stack.runtime import Stack
from services.stack.sources import capture_sql
from tests.fixtures.pipeline import wait_until
from tests.fixtures.stack import login_role
from tests.fixtures.sync_standby import WaitingCommit, absent_synchronous_standby

CDCFLOW = str(Path(sys.executable).with_name("cdcflow"))


def _start(*tables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CDCFLOW, "backfill", "start", *tables], capture_output=True, text=True, timeout=120, check=False
    )


def _signals(pg: psycopg.Connection[tuple[object, ...]]) -> object:
    row = pg.execute("select count(*) from cdcflow.debezium_signal where type = 'execute-snapshot'").fetchone()
    return row[0] if row else None


@pytest.fixture
def keyless(stack: Stack, pg: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    """A table without a primary key in a captured schema (the filtered publication does not take it)."""
    name = f"lending.keyless_{uuid.uuid4().hex[:8]}"
    pg.execute(f"create table {name} (a integer, b text)".encode())
    pg.execute(f"insert into {name} select g, 'x' from generate_series(1, 10) g".encode())
    try:
        yield name
    finally:
        pg.execute(f"drop table {name}".encode())


def test_a_table_the_source_lacks_is_refused(stack: Stack, pg: psycopg.Connection[tuple[object, ...]]) -> None:
    before = _signals(pg)
    done = _start("lending.no_such_table")
    assert done.returncode != 0
    assert "has no table lending.no_such_table" in done.stdout + done.stderr
    assert _signals(pg) == before


def test_a_table_without_a_primary_key_is_refused(keyless: str, pg: psycopg.Connection[tuple[object, ...]]) -> None:
    before = _signals(pg)
    done = _start(keyless)
    assert done.returncode != 0
    assert f"{keyless} has no primary key" in done.stdout + done.stderr
    assert _signals(pg) == before


def test_a_table_whose_rows_row_level_security_hides_is_refused(
    stack: Stack, settings: Settings, pg: psycopg.Connection[tuple[object, ...]]
) -> None:
    name = f"lending.tenants_{uuid.uuid4().hex[:8]}"
    pg.execute(f"create table {name} (id integer primary key); alter table {name} enable row level security".encode())
    try:
        with login_role(pg, settings, "rls_reader", ["usage on schema lending", f"select on {name}"]) as reader:
            before = _signals(pg)
            env = {**os.environ, "CDCFLOW_POSTGRES__USER": reader.postgres.user}
            env["CDCFLOW_POSTGRES__PASSWORD"] = reader.postgres.password.get_secret_value()
            done = subprocess.run(
                [CDCFLOW, "backfill", "start", name], capture_output=True, text=True, env=env, timeout=120, check=False
            )
            assert done.returncode != 0
            assert f"{name} has row-level security that applies to {reader.postgres.user}" in done.stderr
            assert "Nothing was sent" in done.stderr
            assert _signals(pg) == before
    finally:
        pg.execute(f"drop table {name}".encode())


@pytest.fixture
def unguarded(stack: Stack, pg: psycopg.Connection[tuple[object, ...]]) -> Iterator[None]:
    """The source's signal table without capture.sql's window guard, as one created by hand would be."""
    pg.execute("drop trigger settle_commits_before_window on cdcflow.debezium_signal")
    try:
        yield
    finally:
        pg.execute(capture_sql().encode())


def test_a_backfill_is_refused_without_the_window_guard_unless_sent_unguarded(
    unguarded: None, pg: psycopg.Connection[tuple[object, ...]]
) -> None:
    before = _signals(pg)
    refused = _start("lending.customers", "--where", "1 = 0", "--again")  # would read nothing
    assert refused.returncode != 0, refused.stdout
    said = " ".join(refused.stderr.split())  # as rich wraps it
    assert "no snapshot window guard" in said
    assert "Nothing was sent; --unguarded sends it anyway" in said
    assert _signals(pg) == before
    sent = _start("lending.customers", "--where", "1 = 0", "--again", "--unguarded")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "sent without the window guard" in " ".join(sent.stdout.split())
    assert _signals(pg) == int(before) + 1  # type: ignore[call-overload]


def test_a_guarded_source_backfills_without_a_warning(stack: Stack) -> None:
    done = _start("lending.customers", "--where", "1 = 0", "--again")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "requested" in done.stdout
    assert "warning" not in done.stdout


class _LongStatement(threading.Thread):
    """A transaction holding an id while one statement runs for a minute, then cancelled."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.pid, self.running = dsn, 0, threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn) as conn:
            self.pid = int(conn.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            conn.execute("select pg_current_xact_id()")
            self.running.set()
            with contextlib.suppress(psycopg.errors.QueryCanceled):
                conn.execute("select pg_sleep(60)")


def test_a_long_statement_holds_a_snapshot_window_no_longer_than_the_bound(
    stack: Stack, settings: Settings, pg: psycopg.Connection[tuple[object, ...]]
) -> None:
    sleeper = _LongStatement(settings.postgres.dsn())
    sleeper.start()
    try:
        assert sleeper.running.wait(10)
        started = time.monotonic()
        done = _start("lending.customers", "--where", "customer_id < 3", "--again")
        assert done.returncode == 0, done.stdout + done.stderr
        [sid] = re.findall(r"backfill-[0-9a-f]{32}", "".join(done.stdout.split()))

        def completed() -> bool:
            status = subprocess.run(
                [CDCFLOW, "backfill", "status", "--json"], capture_output=True, text=True, timeout=60, check=True
            )
            return any(s["id"] == sid and s["state"] == "COMPLETED" for s in json.loads(status.stdout))

        wait_until("the backfill to complete", completed, timeout_s=45, interval_s=0.5)
        assert sleeper.is_alive(), "the statement ended before the backfill: nothing was shown"
        assert time.monotonic() - started < 45
    finally:
        pg.execute("select pg_cancel_backend(%s)", (sleeper.pid,))
        sleeper.join(30)


@pytest.fixture
def plain_role(stack: Stack, settings: Settings, pg: psycopg.Connection[tuple[object, ...]]) -> Iterator[Settings]:
    """Settings that connect as a role with nothing but INSERT on the signal table, as a connector's role may be:
    no member of pg_read_all_stats, so other roles' sessions' state and wait events are hidden from it."""
    grants = ["usage on schema cdcflow", "insert on cdcflow.debezium_signal"]
    with login_role(pg, settings, "cdcflow_plain", grants) as plain:
        member = pg.execute("select pg_has_role(%s, 'pg_read_all_stats', 'USAGE')", (plain.postgres.user,))
        assert member.fetchone() == (False,)
        yield plain


@pytest.fixture
def scratch(stack: Stack, pg: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    """An empty table the connector does not capture, for commits of the tests' own."""
    schema = f"guard_{uuid.uuid4().hex[:8]}"
    pg.execute(f"create schema {schema}; create table {schema}.t (i integer)".encode())
    try:
        yield f"{schema}.t"
    finally:
        for (gid,) in pg.execute("select gid from pg_prepared_xacts where gid like %s", (f"{schema}%",)).fetchall():
            pg.execute(f"rollback prepared '{gid}'".encode())
        pg.execute(f"drop schema {schema} cascade".encode())


def _window_held_s(settings: Settings) -> float:
    """Seconds an insert of a snapshot-window-open row takes, as Debezium's would; rolled back, so the
    connector never reads it."""
    with psycopg.connect(settings.postgres.dsn()) as conn:
        started = time.monotonic()
        conn.execute(
            "insert into cdcflow.debezium_signal (id, type) values (%s, 'snapshot-window-open')",
            (f"probe-{uuid.uuid4().hex}",),
        )
        held = time.monotonic() - started
        conn.rollback()
    return held


RELEASE_AFTER_S = 2.0


@pytest.mark.parametrize("prepared", [False, True], ids=["commit", "commit-prepared"])
def test_a_commit_streamed_but_not_visible_holds_a_window_whatever_role_asks(
    prepared: bool, plain_role: Settings, settings: Settings, scratch: str, pg: psycopg.Connection[tuple[object, ...]]
) -> None:
    dsn = settings.postgres.dsn()
    if prepared:
        assert pg.execute("show max_prepared_transactions").fetchone() != ("0",), (
            "the stack's PostgreSQL takes no prepared transaction: start it afresh (`cdcflow stack down --purge`)"
        )
        gid = f"{scratch.split('.', maxsplit=1)[0]}-1"
        with psycopg.connect(dsn, autocommit=True) as preparer:
            preparer.execute(f"begin; insert into {scratch} values (1); prepare transaction '{gid}'".encode())
        commit = WaitingCommit(dsn, f"commit prepared '{gid}'")
    else:
        commit = WaitingCommit(dsn, f"insert into {scratch} values (1)")
    with absent_synchronous_standby(pg):
        commit.start()
        try:
            commit.wait_committing(pg)
            assert pg.execute(f"select count(*) from {scratch}".encode()).fetchone() == (0,), "visible already"
            release = threading.Timer(RELEASE_AFTER_S, commit.release)
            release.start()
            held = _window_held_s(plain_role)
            release.join()
        finally:
            commit.release()
    assert pg.execute(f"select count(*) from {scratch}".encode()).fetchone() == (1,)
    assert held >= RELEASE_AFTER_S - 0.1, f"the window opened after {held:.3f} s, before the commit was visible"
    assert held < RELEASE_AFTER_S + 10


def test_a_backfill_is_refused_when_the_guard_cannot_see_other_roles(
    plain_role: Settings, pg: psycopg.Connection[tuple[object, ...]]
) -> None:
    pg.execute(f"alter function cdcflow.{WINDOW_GUARD}() owner to {plain_role.postgres.user}".encode())
    done = _start("lending.customers", "--where", "1 = 0", "--again")
    assert done.returncode != 0, done.stdout
    said = " ".join(done.stderr.split())
    assert f"runs as {plain_role.postgres.user}, which cannot see other roles' sessions" in said
    assert f"Grant pg_read_all_stats to {plain_role.postgres.user}" in said
