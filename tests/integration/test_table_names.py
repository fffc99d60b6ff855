"""Table names that are not plain identifiers, captured by a real connector.

Debezium names a table's topic ``<prefix>.<schema>.<table>`` with each character Kafka refuses in a topic name made
``_``: ``t$x`` shares ``t_x``'s topic, where the writer (which finds a table by its topic) would take its changes
for ``t_x``'s, into ``t_x``'s lake and silver, with nothing in the DLQ. A name Kafka takes but that is no plain
identifier (``tmp-import``, ``2fa``) makes a topic the writer dead-letters. The registration checks refuse both
before a connector captures them.
"""

from __future__ import annotations

import json

import httpx
import pytest

from services.common.contracts.catalog import publishing_hazards
from services.stack.sources import capture_blockers
from tests.fixtures.pipeline import partition_ends, read_partitions, wait_until
from tests.fixtures.source import IsolatedSource

SCHEMA_SQL = """
create table lending.t_x (id integer primary key, note text);
create table lending."t$x" (id integer primary key, note text);
create table lending."Order Items" (id integer primary key);
create table lending."tmp-import" (id integer primary key);
create table lending."2fa" (id integer primary key);
insert into lending.t_x values (1, 'plain'), (2, 'plain');
insert into lending."t$x" values (1, 'dollar'), (3, 'dollar');
insert into lending."Order Items" values (1);
insert into lending."tmp-import" values (1);
insert into lending."2fa" values (1);
"""
UNROUTABLE = ["lending.2fa", "lending.Order Items", "lending.t$x", "lending.tmp-import"]


@pytest.mark.parametrize("isolated_source", [SCHEMA_SQL], indirect=True)
def test_a_name_that_is_no_plain_identifier_reaches_another_topic_and_is_refused(
    isolated_source: IsolatedSource,
) -> None:
    source = isolated_source.settings
    prefix = source.kafka.topic_prefix
    shared = f"{prefix}.lending.t_x"

    def published(topic: str) -> int:
        return sum(partition_ends(source, [topic]).values())

    topics = [shared, f"{prefix}.lending.Order_Items", f"{prefix}.lending.tmp-import", f"{prefix}.lending.2fa"]
    wait_until("every table's snapshot", lambda: [published(t) for t in topics] == [4, 1, 1, 1])
    # what the hazard is: two tables' snapshots in one topic, the source block alone telling them apart
    events = [json.loads(m.value() or b"null") for m in read_partitions(source, partition_ends(source, [shared]))]
    read = sorted((e["source"]["table"], e["after"]["id"], e["after"]["note"]) for e in events)
    assert read == [("t$x", 1, "dollar"), ("t$x", 3, "dollar"), ("t_x", 1, "plain"), ("t_x", 2, "plain")]

    dsn = source.postgres.dsn()
    hazards = {t: h for t, h in publishing_hazards(dsn).items() if h.kind == "name_unroutable"}
    assert sorted(hazards) == UNROUTABLE
    assert "Debezium sends its changes to the topic of lending.t_x" in hazards["lending.t$x"].why
    assert "the topic of lending.Order_Items" in hazards["lending.Order Items"].why
    for table in ("lending.tmp-import", "lending.2fa"):
        assert "the writer cannot name a table from its topic" in hazards[table].why

    # the connector's own lists take them all: registering it again is refused, naming each
    connector = source.connect.connector
    config = httpx.get(f"{source.connect.url}/connectors/{connector}/config", timeout=30).json()
    blockers = capture_blockers(dsn, config)
    assert len(blockers) == len(UNROUTABLE)
    assert all(any(f"'{table}'" in why for why in blockers) for table in UNROUTABLE)
