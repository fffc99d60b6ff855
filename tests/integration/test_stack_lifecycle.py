"""`cdcflow stack` against real processes: idempotent up, clean down, recovery from kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import psycopg
import pytest

from services.stack.connect import load_connector
from services.stack.errors import ComponentFailedError, StackError
from services.stack.processes import pid_alive
from services.stack.runtime import Stack
from services.stack.sources import SNAPSHOT_OVERRIDES, registrations
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


SHOP_SQL = "create table public.users (user_id bigint primary key, email text not null, plan text)"


def _with_second_source(stack: Stack, connect_dir: Path) -> Stack:
    """The stack with a connect folder of its own: the repository's sources plus ``shop``, a database of its
    own on the stack's PostgreSQL with its own slot, publication and topic prefix."""
    repo = stack.settings.stack.connect_dir
    (connect_dir / "connectors").mkdir(parents=True)
    for shared in repo.iterdir():  # the jars, the worker's and the broker's files
        if shared.name != "connectors":
            (connect_dir / shared.name).symlink_to(shared)
    for source in (repo / "connectors").glob("*.json"):
        shutil.copy(source, connect_dir / "connectors" / source.name)
    config = {
        key: value
        for key, value in load_connector(repo, stack.settings.connect.connector).items()
        if not key.startswith("heartbeat.")  # the heartbeat table is the demo schema's
    }
    config.update(
        {
            "database.dbname": "shop",
            "topic.prefix": "shop",
            "slot.name": "cdcflow_shop",
            "publication.name": "cdcflow_shop",
            "schema.include.list": "public",
            "table.include.list": "public\\.users",
        }
    )
    (connect_dir / "connectors" / "shop.json").write_text(json.dumps({"name": "shop", "config": config}))
    return Stack(
        stack.settings.model_copy(
            update={"stack": stack.settings.stack.model_copy(update={"connect_dir": connect_dir})}
        )
    )


def test_every_source_is_started_shown_and_leaves_no_slot(stack: Stack, tmp_path: Path) -> None:
    with psycopg.connect(stack.settings.postgres.dsn(), autocommit=True) as conn:
        conn.execute("create database shop")
    with psycopg.connect(
        stack.settings.postgres.model_copy(update={"database": "shop"}).dsn(), autocommit=True
    ) as conn:
        conn.execute(SHOP_SQL)
    two = _with_second_source(stack, tmp_path / "connect")
    try:
        two.up()
        status = {c.name: c for c in two.status()}
        assert status["connector:lending"].healthy
        assert status["connector:shop"].healthy
        assert {name for name, _ in two.postgres.slots()} == {stack.slot_name, "cdcflow_shop"}

        two.down()
        two.postgres.start(timeout_s=60)
        try:
            assert two.postgres.slots() == []  # both sources' slots, each dropped from its own database
        finally:
            two.postgres.stop()
    finally:
        stack.up()  # the session's stack, as the other tests expect it
        stack.connect.delete("shop")
        wait_until("the shop slot to be released", lambda: ("cdcflow_shop", True) not in stack.postgres.slots())
        stack.postgres.drop_slot("cdcflow_shop", "shop")
        with psycopg.connect(stack.settings.postgres.dsn(), autocommit=True) as conn:
            conn.execute("drop database if exists shop with (force)")
    assert {name for name, _ in stack.postgres.slots()} == {stack.slot_name}


SHOP_HAZARD_SQL = """
create table public.users (user_id bigint primary key, email text);
create table public.tags (tag text not null unique);  -- a key, but no replica identity
create table public.events (id bigint primary key);
create table public.events_2025 (primary key (id)) inherits (public.events);
insert into public.tags values ('a');
"""


def test_a_source_whose_tables_must_not_be_published_is_not_registered(stack: Stack, tmp_path: Path) -> None:
    shop = stack.settings.postgres.model_copy(update={"database": "shop"}).dsn()
    with psycopg.connect(stack.settings.postgres.dsn(), autocommit=True) as conn:
        conn.execute("create database shop")
    try:
        with psycopg.connect(shop, autocommit=True) as conn:
            conn.execute(SHOP_HAZARD_SQL.encode())
        two = _with_second_source(stack, tmp_path / "connect")
        shop_file = tmp_path / "connect" / "connectors" / "shop.json"
        document = json.loads(shop_file.read_text())
        document["config"]["table.include.list"] = "public\\..*"  # every table of the database
        shop_file.write_text(json.dumps(document))

        configs, refused = registrations(two.settings)
        assert configs == {"lending": load_connector(stack.settings.stack.connect_dir, "lending")}
        assert len(refused) == 1
        assert refused[0].startswith("connector 'shop' not registered: public.tags has no primary key")

        with pytest.raises(StackError, match=r"connector 'shop' not registered: public.tags has no primary key"):
            two.up()
        assert two.connect.connector_status("shop") is None
        assert stack.connect.connector_status("lending")["connector"]["state"] == "RUNNING"  # type: ignore[index]
        assert "cdcflow_shop" not in {name for name, _ in stack.postgres.slots()}
        with psycopg.connect(shop, autocommit=True) as conn:  # never published: still writable
            assert conn.execute("update public.tags set tag = 'b'").rowcount == 1
            conn.execute("alter table public.tags replica identity using index tags_tag_key")

        configs, refused = registrations(two.settings)  # the remedy applied: registered with a snapshot of ONLY
        assert refused == []
        assert configs["shop"][SNAPSHOT_OVERRIDES] == "public.events"
        assert configs["shop"][f"{SNAPSHOT_OVERRIDES}.public.events"] == 'SELECT * FROM ONLY "public"."events"'
        assert {k: v for k, v in configs["shop"].items() if not k.startswith(SNAPSHOT_OVERRIDES)} == document["config"]
    finally:
        with psycopg.connect(stack.settings.postgres.dsn(), autocommit=True) as conn:
            conn.execute("drop database if exists shop with (force)")


def test_a_source_holding_a_type_debezium_fails_on_is_not_registered(stack: Stack, tmp_path: Path) -> None:
    shop = stack.settings.postgres.model_copy(update={"database": "shop"}).dsn()
    with psycopg.connect(stack.settings.postgres.dsn(), autocommit=True) as conn:
        conn.execute("create database shop")
    two = _with_second_source(stack, tmp_path / "connect")
    try:
        with psycopg.connect(shop, autocommit=True) as conn:
            conn.execute(SHOP_SQL)
            # in a schema the connector does not capture, used by no table: Debezium loads every type at start
            conn.execute(
                "create schema other; create type other.mood as enum ('calm'); create domain other.moody as other.mood"
            )
            conn.execute("create type other.nothing as enum ()")

        configs, refused = registrations(two.settings)
        assert "shop" not in configs
        [why] = refused
        assert "type other.moody is a domain over the enum mood: Debezium's connector fails its task" in why
        assert "type other.nothing is an enum with no label" in why
        with pytest.raises(StackError, match=r"connector 'shop' not registered: type other.moody"):
            two.up()
        assert two.connect.connector_status("shop") is None

        # what the refusal spares: registered anyway, the task fails before it captures anything
        two.connect.put("shop", load_connector(two.settings.stack.connect_dir, "shop"))
        with pytest.raises(ComponentFailedError, match="NullPointerException"):
            two.connect.wait_running("shop", timeout_s=60)
        two.connect.delete("shop")

        with psycopg.connect(shop, autocommit=True) as conn:  # the remedies the refusal names
            conn.execute("drop domain other.moody; alter type other.nothing add value 'placeholder'")
        configs, refused = registrations(two.settings)
        assert refused == []
        assert "shop" in configs
    finally:
        stack.connect.delete("shop")
        if ("cdcflow_shop", False) in stack.postgres.slots() or ("cdcflow_shop", True) in stack.postgres.slots():
            wait_until("the shop slot to be released", lambda: ("cdcflow_shop", True) not in stack.postgres.slots())
            stack.postgres.drop_slot("cdcflow_shop", "shop")
        with psycopg.connect(stack.settings.postgres.dsn(), autocommit=True) as conn:
            conn.execute("drop database if exists shop with (force)")
