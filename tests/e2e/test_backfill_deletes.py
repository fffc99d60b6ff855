"""Rows deleted while the replication slot was lost, removed from silver by ``cdcflow backfill deletes``.

A table with a key of seven types (hostile text, money and an enum among them) is captured and carried to
silver. Then the slot is lost: the connector is removed, its slot dropped, 40 rows deleted, and the connector
registered again — it finds no slot and snapshots the table afresh (``snapshot.mode=when_needed``), which does
not read the deleted rows and sends no delete for them. ``verify`` shows them as extra rows of silver.
``backfill deletes --dry-run`` counts them and sends nothing; then, while an open transaction holds one of them
inserted again, ``backfill deletes`` waits for the table's SHARE lock, finds that key back and leaves it, and
sends a delete for each of the other 39 (through a producer queue far smaller than what it sends). One of those
is inserted again the moment the lock is let go: its delete still comes before the insert. Silver then equals
the source.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from services.stack.runtime import Stack
from services.transform.deletes import ORIGIN
from tests.fixtures.cli import cdcflow
from tests.fixtures.pipeline import WriterProcess, header_dict, partition_ends, read_partitions, wait_until
from tests.fixtures.source import IsolatedSource
from tests.fixtures.transform import describe

ROWS, DELETED = 300, 40
HOLDINGS = f"""
create type lending.holding_kind as enum ('spot', 'term', 'call');
create table lending.holdings (
    account   text not null,
    booked_on date not null,
    seq       bigint not null,
    ref       uuid not null,
    tier      numeric(6, 2) not null,
    fee       money not null,
    kind      lending.holding_kind not null,
    amount    numeric(14, 2) not null,
    note      text,
    primary key (account, booked_on, seq, ref, tier, fee, kind)
);
insert into lending.holdings
select 'acct ' || (g % 7) || E' \\u00e9''"\\\\', date '2020-01-01' + g, g * 1000003, md5(g::text)::uuid,
       (g % 5) * 1.25, ((g % 4) * 10.01)::numeric::money,
       (array['spot', 'term', 'call'])[g % 3 + 1]::lending.holding_kind, g * 2.5,
       case when g % 3 = 0 then null else 'note ' || g end
  from generate_series(1, {ROWS}) g;
"""
TABLE = "lending.holdings"


def _lose_the_slot(stack: Stack, source: IsolatedSource, deleted: str) -> None:
    """The connector's slot goes while rows are deleted (kept in ``kept.holdings``, which is not captured);
    registered again, the connector snapshots afresh."""
    name, dsn = source.settings.connect.connector, source.settings.postgres.dsn()
    config = httpx.get(f"{stack.connect.url}/connectors/{name}/config", timeout=30).json()
    stack.connect.delete(name)

    def released() -> bool:
        return not any(slot == source.slot and active for slot, active in stack.postgres.slots())

    wait_until(f"slot {source.slot} to be released", released, timeout_s=60)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_drop_replication_slot(%s)", (source.slot,))
        conn.execute(
            f"create schema kept; create table kept.holdings as select * from {TABLE} where {deleted}".encode()
        )
        conn.execute(f"delete from {TABLE} where {deleted}".encode())
    stack.connect.put(name, config)
    stack.connect.wait_running(name, timeout_s=120)
    wait_until(f"slot {source.slot} again", lambda: any(s == source.slot for s, _ in stack.postgres.slots()), 120)
    source.wait_captured()


def _waiting(conn: psycopg.Connection[Any], mode: str) -> bool:
    """Whether a lock of ``mode`` on the table waits."""
    found = conn.execute(
        "select count(*) from pg_locks where relation = %s::regclass and mode = %s and not granted", (TABLE, mode)
    ).fetchone()
    return bool(found and found[0])


def _commit_once_locked_out(dsn: str, holder: psycopg.Connection[Any], committed: threading.Event) -> None:
    """Commit ``holder``'s transaction once a SHARE lock on the table waits for it, and an insert of a deleted
    key (seq 2) waits behind that lock: it goes in the moment the command lets go of the lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_until("the command to wait for the SHARE lock", lambda: _waiting(conn, "ShareLock"), 120, 0.05)
        inserter = threading.Thread(target=_insert_again, args=(dsn, 2 * 1000003), daemon=True)
        inserter.start()
        wait_until("the insert to wait behind it", lambda: _waiting(conn, "RowExclusiveLock"), 30, 0.05)
        committed.set()
    holder.commit()
    inserter.join(60)


def _insert_again(dsn: str, seq: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"insert into {TABLE} select * from kept.holdings where seq = %s".encode(), (seq,))


def _event(message: Any) -> dict[str, Any]:
    value = json.loads(message.value() or b"null") or {}
    return dict(value.get("payload", value))


def _is_insert_of(event: dict[str, Any], g: int) -> bool:
    return event.get("op") == "c" and (event.get("after") or {}).get("seq") == g * 1000003


def _deletes(env: dict[str, str], *flags: str) -> dict[str, Any]:
    [result] = json.loads(cdcflow(env, "backfill", "deletes", TABLE, "--json", *flags))
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("isolated_source", [HOLDINGS], indirect=True)
def test_rows_deleted_while_the_slot_was_lost_leave_silver_after_backfill_deletes(
    isolated_source: IsolatedSource, writer: WriterProcess, stack: Stack, tmp_path: Path
) -> None:
    settings = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path, lambda c: c.qualified_name == TABLE)
    env = pipeline.env
    dsn = settings.postgres.dsn()

    isolated_source.wait_captured()
    report, _ = pipeline.settle([TABLE])
    assert not report.drift, describe(report)

    _lose_the_slot(stack, isolated_source, f"seq <= {DELETED} * 1000003")
    pipeline.run([TABLE])
    report = pipeline.verify()
    [holdings] = report.tables
    assert (holdings.extra, holdings.missing, holdings.different) == (DELETED, 0, 0), describe(report)

    topic = f"{settings.kafka.topic_prefix}.{TABLE}"
    before = partition_ends(settings, [topic])
    counted = _deletes(env, "--dry-run")
    assert (counted["absent"], counted["sent"], counted["lsn"]) == (DELETED, 0, None)
    assert partition_ends(settings, [topic]) == before, "a dry run sent something"

    # one deleted key inserted again by a transaction still open when the command starts: the first look does
    # not see it; the SHARE lock waits for it to commit, and the second look finds it
    with psycopg.connect(dsn) as holder:
        holder.execute(f"insert into {TABLE} select * from kept.holdings where seq = 1000003".encode())
        committed = threading.Event()
        committer = threading.Thread(target=_commit_once_locked_out, args=(dsn, holder, committed), daemon=True)
        committer.start()
        # a producer queue of 8 records: sending 78 fills it again and again
        done = _deletes({**env, "CDCFLOW_KAFKA__EXTRA__QUEUE_BUFFERING_MAX_MESSAGES": "8"})
        committer.join(30)
    assert committed.is_set(), "the command never waited for the table's SHARE lock"
    assert (done["absent"], done["returned"], done["sent"]) == (DELETED, 1, DELETED - 1), done
    assert isinstance(done["lsn"], int)
    assert done["lsn"] > 0

    ends = partition_ends(settings, [topic])
    marked = [
        m
        for m in read_partitions(settings, ends)
        if (m.offset() or 0) >= before.get((topic, m.partition() or 0), 0)
        and header_dict(m).get(ORIGIN[0]) == ORIGIN[1]
    ]
    assert sum(m.value() is not None for m in marked) == DELETED - 1
    assert sum(m.value() is None for m in marked) == DELETED - 1  # each delete's tombstone
    # seq 2, deleted when the command looked and inserted again as it let go of the lock: the insert's WAL
    # record may start right where the command read the WAL's position, so the delete takes the LSN before it
    [again] = [
        e for e in map(_event, read_partitions(settings, partition_ends(settings, [topic]))) if _is_insert_of(e, 2)
    ]
    assert again["source"]["lsn"] > done["lsn"]

    report, _ = pipeline.settle([TABLE])
    assert not report.drift, describe(report)
    [holdings] = report.tables
    assert holdings.source_rows == holdings.silver_rows == ROWS - DELETED + 2
