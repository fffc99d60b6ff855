"""The warehouse equals the source on a schema written to cover types, not a business.

One table per PostgreSQL type family, each column with a property (a default, NOT NULL, a domain, an enum,
an identity, a generated column, arrays of the family), in a source of its own. The rows hold NULL, the
defaults, each type's extremes, unicode and TOAST-sized values, and documents and images of several MiB
(many times what Kafka carries by default, read by a writer whose fetches are far smaller than one such
record); then updates that leave every TOASTed column untouched, updates that set columns to NULL, deletes,
and rows that move between the partitions of a partitioned table. After the pipeline (writer, loader,
transform) has carried it all, ``verify`` must find zero drift, and an independent reading of both sides,
value by value in this file, must agree. The same rows go through the writer's Avro format too, written by a
real Connect Avro converter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import secrets
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from services.common.contracts.catalog import GENERATED
from services.common.kafka import topic_names
from services.common.settings import Settings
from services.transform.verify import VerifyReport
from tests.fixtures.pipeline import WriterProcess, partition_ends, wait_until
from tests.fixtures.source import AvroSource, IsolatedSource
from tests.fixtures.transform import describe

BIG = secrets.token_hex(12_000)  # incompressible text: stored out of line (TOAST)
HUGE_TEXT = secrets.token_urlsafe(5 << 20)[: 5 << 20]  # a 5 MiB document
HUGE_BYTES = secrets.token_bytes(3 << 20)  # a 3 MiB image: 4 MiB of base64 in its change event

SCHEMA_SQL = """
create extension if not exists hstore;
create type lending.mood as enum ('calm', 'tense', 'über');
create domain lending.positive_int as integer check (value > 0);
create domain lending.short_text as varchar(40);
create domain lending.amount as numeric(12, 2);

create table lending.m_numbers (
    id integer primary key,
    i2 smallint,
    i4 integer default 7,
    i8 bigint not null default 0,
    ident bigint generated always as identity,
    counter serial,
    positive lending.positive_int,
    fixed numeric(20, 5) default 1.5,
    free numeric,
    amount lending.amount,
    r real,
    d double precision,
    cash money,
    doubled bigint generated always as (i4::bigint * 2) stored
);

create table lending.m_text (
    id integer primary key,
    t text default 'plain',
    vc varchar(12),
    ch char(5),
    mood lending.mood default 'calm',
    short lending.short_text,
    big text,
    u uuid,
    b boolean default true,
    inet_addr inet,
    cidr_net cidr,
    mac macaddr,
    xml_doc xml,
    words tsvector,
    span int4range
);

create table lending.m_time (
    id integer primary key,
    d date default current_date,
    ts timestamp,
    ts3 timestamp(3),
    tstz timestamptz default now(),
    t time,
    ttz timetz,
    iv interval
);

create table lending.m_docs (
    id integer primary key,
    js json,
    jb jsonb default '{}',
    big_jb jsonb,
    hs hstore,
    blob bytea,
    big_blob bytea
);

create table lending.m_arrays (
    id integer primary key,
    ints integer[] default '{1,2}',
    amounts numeric(10, 2)[],
    texts text[],
    big_texts text[],
    days date[],
    ids uuid[],
    flags boolean[],
    moods lending.mood[],
    rates numeric[]
);

create table lending.m_large (id integer primary key, doc text, image bytea, version integer);

-- arrays stored out of line, which Debezium sends, untouched by an update, in forms of their own
create table lending.m_toasted (
    id integer primary key, note text, counts integer[], totals bigint[], days date[], ids uuid[], images bytea[],
    pairs hstore
);
alter table lending.m_toasted alter column counts set storage external, alter column totals set storage external,
    alter column days set storage external, alter column ids set storage external,
    alter column images set storage external, alter column pairs set storage external;

create table lending.m_done (id integer primary key);

create table lending.m_parts (
    id bigint not null,
    taken_on date not null,
    reading numeric(10, 2),
    note text,
    primary key (id, taken_on)
) partition by range (taken_on);
create table lending.m_parts_2024 partition of lending.m_parts for values from ('2024-01-01') to ('2025-01-01');
create table lending.m_parts_rest partition of lending.m_parts default;
"""

TABLES = ["m_numbers", "m_text", "m_time", "m_docs", "m_arrays", "m_parts", "m_large", "m_toasted"]
LARGE_ROWS_SQL = "insert into lending.m_large (id, doc, image, version) values (1, %s, null, 1), (2, null, %s, 1)"

ROWS_SQL = f"""
-- NULL everywhere it is allowed, the defaults, the extremes, unicode and TOAST
insert into lending.m_numbers (id, i2, i4, i8, positive, fixed, free, amount, r, d, cash)
values (1, null, null, 0, null, null, null, null, null, null, null);
insert into lending.m_numbers (id) values (2);
insert into lending.m_numbers (id, i2, i4, i8, positive, fixed, free, amount, r, d, cash) values
  (3, 32767, 2147483647, 9223372036854775807, 2147483647, 999999999999999.99999,
   123456789012345678901234567890.123456789012345678901234567, 9999999999.99, 3.4028235e38,
   1.7976931348623157e308, 92233720368547758.07),
  (4, -32768, -2147483648, -9223372036854775808, 1, -999999999999999.99999,
   -0.000000000000000000000000000000000001, -9999999999.99, -1.17549435e-38, -2.2250738585072014e-308,
   -92233720368547758.08),
  (5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0);
-- a float's NaN and infinities, which JSON has no number for
insert into lending.m_numbers (id, r, d) values (6, 'NaN', '-Infinity'), (7, 'Infinity', 'NaN');

insert into lending.m_text (id, t, vc, ch, mood, short, big, u, b, inet_addr, cidr_net, mac, xml_doc, words, span)
values (1, null, null, null, null, null, null, null, null, null, null, null, null, null, null);
insert into lending.m_text (id) values (2);
insert into lending.m_text values
  (3, 'tab	and newline
 and "quotes" \\ backslash', 'exactly12chr', 'ab', 'über', 'domain text',
   '{BIG}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', false, '192.168.0.1/24', '10.0.0.0/8',
   '08:00:2b:01:02:03', '<a b="c">d</a>', to_tsvector('simple', 'the quick brown fox'), '[1,10)'),
  (4, 'ünïcödé 🚀 中文 \u202ertl', '', '', 'tense', '', 'short', '00000000-0000-0000-0000-000000000000', true,
   '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', '<empty/>', ''::tsvector, 'empty'),
  (5, '', 'x', 'x', 'calm', 'x', '{BIG}', 'ffffffff-ffff-ffff-ffff-ffffffffffff', true,
   '0.0.0.0', '0.0.0.0/0', '00:00:00:00:00:00', '<x/>', 'a:1 b:2'::tsvector, '(,)');

insert into lending.m_time values (1, null, null, null, null, null, null, null);
insert into lending.m_time (id) values (2);
insert into lending.m_time values
  (3, '9999-12-31', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999',
   '9999-12-31 23:59:59.999999+00', '23:59:59.999999', '23:59:59.999999+14',
   '178000000 years 11 mons 30 days 23:59:59.999999'),
  (4, '0001-01-01', '0001-01-01 00:00:00', '0001-01-01 00:00:00.001', '0001-01-01 00:00:00+00', '00:00:00',
   '00:00:00-12', '-1 days -00:00:00.000001'),
  (5, '1970-01-01', '1969-12-31 23:59:59.999999', '1969-12-31 23:59:59.999', '2024-02-29 12:34:56.789012+05:30',
   '12:00:00', '12:00:00+05:30', '1 mon 2 days 03:04:05.678');

insert into lending.m_docs values (1, null, null, null, null, null, null);
insert into lending.m_docs (id) values (2);
insert into lending.m_docs values
  (3, '{{"b": 1, "a": [1.50, "x", null, true]}}', '{{"ü": "🚀", "n": 12345678901234567890.123}}',
   '{{"big": "{BIG}"}}', 'a=>1, "b c"=>NULL', '\\x00ff10', decode('{BIG}', 'hex')),
  (4, '[]', '[]', '{{}}', '', '\\x', '\\x00'),
  (5, '"just a string"', 'null', '{{"big": "{BIG}", "n": 1}}', 'k=>"v with \\"quote\\""', '\\xdeadbeef',
   decode('{BIG}', 'hex'));

insert into lending.m_arrays values (1, null, null, null, null, null, null, null, null, null);
insert into lending.m_arrays (id) values (2);
insert into lending.m_arrays values
  (3, '{{2147483647,-2147483648,0}}', '{{99999999.99,-0.01,null}}', '{{"a,b","with \\"quote\\"","",null,"ü🚀"}}',
   array['{BIG}'], '{{9999-12-31,0001-01-01}}', '{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}}', '{{true,false,null}}',
   '{{calm,über}}', '{{12345678901234567890123456789012345678.12345678901234567890123456789012345678,-1e-38,null}}'),
  (4, '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}'),
  (5, '{{null}}', '{{0}}', '{{x}}', array['{BIG}', 'second'], '{{1970-01-01}}', '{{}}', '{{false}}', '{{tense}}',
   '{{0,1.5}}');

insert into lending.m_parts values
  (1, '2024-03-01', 1.00, 'stays in 2024'),
  (2, '2024-06-01', 2.00, '{BIG}'),
  (3, '2025-06-01', 3.00, null),
  (4, '2024-07-01', null, 'deleted later');

insert into lending.m_toasted select 1, 'first',
  (select array_agg(g) from generate_series(1, 2000) g),
  (select array_agg(g::bigint << 40) from generate_series(1, 2000) g),
  (select array_agg(date '2020-01-01' + g) from generate_series(1, 2000) g),
  (select array_agg(md5(g::text)::uuid) from generate_series(1, 2000) g),
  (select array_agg(decode(md5(g::text), 'hex')) from generate_series(1, 2000) g),
  (select hstore(array_agg(md5(g::text)), array_agg(md5((g + 1)::text))) from generate_series(1, 300) g);
insert into lending.m_toasted (id) values (2);

-- updates that leave every TOASTed column untouched
update lending.m_toasted set note = 'touched' where id = 1;
update lending.m_numbers set i2 = 11 where id = 5;
update lending.m_text set vc = 'touched' where id in (3, 5);
update lending.m_docs set js = '{{"touched": true}}' where id in (3, 5);
update lending.m_arrays set ints = '{{42}}' where id in (3, 5);
update lending.m_time set t = '01:02:03' where id = 5;
update lending.m_large set version = 2 where id = 1;
-- updates that set columns to NULL (columns with defaults included)
update lending.m_numbers set i4 = null, fixed = null, free = null, cash = null where id = 3;
update lending.m_text set t = null, mood = null, b = null, big = null where id = 3;
update lending.m_time set d = null, tstz = null, iv = null where id = 3;
update lending.m_docs set jb = null, big_blob = null where id = 3;
update lending.m_arrays set ints = null, big_texts = null where id = 3;
-- rows that move between partitions, one of them with its TOASTed note untouched
update lending.m_parts set taken_on = '2025-01-15' where id = 1;
update lending.m_parts set taken_on = '2026-02-01', reading = 2.50 where id = 2;
update lending.m_parts set taken_on = '2024-01-02' where id = 3;
-- deletes
delete from lending.m_numbers where id = 4;
delete from lending.m_text where id = 4;
delete from lending.m_time where id = 4;
delete from lending.m_docs where id = 4;
delete from lending.m_arrays where id = 4;
delete from lending.m_parts where id = 4;
-- written last: once its event is in Kafka, Debezium has read every change above from the WAL
insert into lending.m_done values (1);
""".replace("{BIG}", BIG)


@pytest.mark.parametrize("isolated_source", [SCHEMA_SQL], indirect=True)
def test_every_type_family_reaches_silver_unchanged(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    report, warehouse = _carry(isolated_source, writer, tmp_path)
    assert not report.drift, describe(report)
    _assert_silver_holds_what_was_written(warehouse)


# What a real Avro converter writes in a NULL's place, by table and column: the column's DEFAULT as Debezium puts
# it in the event's schema (a function's, as of the epoch). Rows 1 and 3 hold NULL in each of these columns.
AVRO_NULLS_AS_DEFAULTS: dict[str, dict[str, Any]] = {
    "m_numbers": {"i4": 7, "fixed": Decimal("1.50000")},
    "m_text": {"t": "plain", "b": True},
    "m_time": {"d": dt.date(1970, 1, 1), "tstz": dt.datetime(1970, 1, 1, tzinfo=dt.UTC)},
    "m_docs": {"jb": {}},
}


@pytest.mark.parametrize("isolated_source", [AvroSource(SCHEMA_SQL)], indirect=True)
def test_avro_values_of_a_real_converter_reach_silver_but_for_the_nulls_it_writes_as_defaults(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    """The writer's ``avro-confluent`` format over Avro written by a real Connect converter (Apicurio's, whose
    Avro conversion is a port of Confluent's) on every type family. That converter writes a NULL of a column
    with a default as the default, which is why cdcflow refuses it (``reading_hazards``): verify must report
    exactly those cells, and every other value must reach silver as it is."""
    report, warehouse = _carry(isolated_source, writer, tmp_path)
    differing = {
        (t.table.removeprefix("lending."), tuple(d.key), column)
        for t in report.tables
        for d in t.first
        for column in d.columns
    }
    assert all(t.different == len(t.first) and not (t.missing or t.extra) for t in report.tables), describe(report)
    made = {(table, (str(row),), column) for table, columns in AVRO_NULLS_AS_DEFAULTS.items() for column in columns
            for row in (1, 3)}  # fmt: skip
    assert differing == made, describe(report)
    with psycopg.connect(isolated_source.settings.postgres.dsn()) as conn:  # NULLs there, in columns with defaults
        for table, _key, column in sorted(made):
            held = conn.execute(f"select count(*) from lending.{table} where id in (1, 3) and {column} is null")
            declared = conn.execute(
                "select column_default is not null from information_schema.columns"
                " where table_schema = 'lending' and table_name = %s and column_name = %s",
                (table, column),
            )
            assert (held.fetchone(), declared.fetchone()) == ((2,), (True,)), (table, column)
    written = {table: dict(rows) for table, rows in EXPECTED.items()}
    for table, defaults in AVRO_NULLS_AS_DEFAULTS.items():
        for row in (1, 3):
            written[table][row] = {**written[table].get(row, {}), **defaults}
    _assert_silver_holds_what_was_written(warehouse, written)


def _carry(isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path) -> tuple[VerifyReport, Path]:
    """The rows above through writer, loader and transform until verify finds nothing more to wait for; the
    report and the warehouse."""
    source = isolated_source.settings
    # the smallest fetches the writer makes (a 256 KiB share a partition): a large record is 20 times that
    qualified = [f"lending.{t}" for t in TABLES]
    pipeline = isolated_source.pipeline(
        writer, tmp_path, lambda c: c.qualified_name in qualified, {"CDCFLOW_WRITER__BUFFER_MAX_BYTES": str(64 << 20)}
    )
    with psycopg.connect(source.postgres.dsn(), autocommit=True) as conn:
        conn.execute(LARGE_ROWS_SQL, (HUGE_TEXT, HUGE_BYTES))
        conn.execute(ROWS_SQL.encode())
    done_topic = f"{source.kafka.topic_prefix}.lending.m_done"
    wait_until("the last change in Kafka", lambda: _published(source, done_topic) > 0)

    report, _ = pipeline.settle(qualified)
    assert sorted(t.table for t in report.tables) == sorted(qualified), describe(report)
    not_compared = {t.table: t.not_compared for t in report.tables if t.not_compared}
    assert not_compared == {"lending.m_numbers": (("doubled", GENERATED),)}  # the generated column, named
    return report, pipeline.settings.duckdb_path()


# What the SQL above leaves in each row, read from silver without any of cdcflow's code: the check does not
# rest on verify's own reading of either side.
EXPECTED: dict[str, dict[int, dict[str, Any]]] = {
    "m_numbers": {
        2: {"i4": 7, "i8": 0, "fixed": Decimal("1.50000"), "ident": 2, "counter": 2, "positive": None},
        3: {"i2": 32767, "i8": 9223372036854775807, "positive": 2147483647, "amount": Decimal("9999999999.99"),
            "d": 1.7976931348623157e308, "i4": None, "fixed": None, "free": None, "cash": None, "ident": 3},
        5: {"i2": 11, "i4": 0, "free": Decimal(0), "cash": Decimal("0.00")},
        6: {"r": math.nan, "d": -math.inf},
        7: {"r": math.inf, "d": math.nan},
    },
    "m_text": {
        2: {"t": "plain", "mood": "calm", "b": True, "vc": None},
        3: {"t": None, "mood": None, "b": None, "big": None, "vc": "touched", "short": "domain text", "ch": "ab   ",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "inet_addr": "192.168.0.1/24"},
        5: {"big": BIG, "vc": "touched", "t": "", "ch": "x    ", "inet_addr": "0.0.0.0", "span": "(,)"},
    },
    "m_time": {
        3: {"d": None, "tstz": None, "iv": None, "ts": dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
            "ts3": dt.datetime(9999, 12, 31, 23, 59, 59, 999000), "t": dt.time(23, 59, 59, 999999)},
        5: {"d": dt.date(1970, 1, 1), "ts": dt.datetime(1969, 12, 31, 23, 59, 59, 999999), "t": dt.time(1, 2, 3),
            "tstz": dt.datetime(2024, 2, 29, 7, 4, 56, 789012, tzinfo=dt.UTC)},
    },
    "m_docs": {
        3: {"jb": None, "big_blob": None, "blob": b"\x00\xff\x10", "hs": {"a": "1", "b c": None}},
        5: {"big_blob": bytes.fromhex(BIG), "blob": b"\xde\xad\xbe\xef", "big_jb": {"big": BIG, "n": 1},
            "js": {"touched": True}},
    },
    "m_arrays": {
        2: {"ints": [1, 2], "texts": None},
        3: {"ints": None, "big_texts": None, "texts": ["a,b", 'with "quote"', "", None, "ü🚀"],
            "days": [dt.date(9999, 12, 31), dt.date(1, 1, 1)],
            "amounts": [Decimal("99999999.99"), Decimal("-0.01"), None],
            "moods": ["calm", "über"], "flags": [True, False, None],
            "rates": [Decimal("12345678901234567890123456789012345678.12345678901234567890123456789012345678"),
                      Decimal("-1E-38"), None]},
        5: {"ints": [42], "big_texts": [BIG, "second"], "ids": [], "rates": [Decimal(0), Decimal("1.5")]},
    },
    "m_parts": {
        1: {"taken_on": dt.date(2025, 1, 15), "note": "stays in 2024"},
        2: {"taken_on": dt.date(2026, 2, 1), "reading": Decimal("2.50"), "note": BIG},
        3: {"taken_on": dt.date(2024, 1, 2), "note": None},
    },
    "m_large": {
        1: {"doc": HUGE_TEXT, "image": None, "version": 2},  # the document untouched by the update: carried
        2: {"doc": None, "image": HUGE_BYTES, "version": 1},
    },
    "m_toasted": {  # every array untouched by the update: carried, not Debezium's placeholder in its form
        1: {"note": "touched", "counts": list(range(1, 2001)), "totals": [g << 40 for g in range(1, 2001)],
            "days": [dt.date(2020, 1, 1) + dt.timedelta(days=g) for g in range(1, 2001)],
            "ids": [str(uuid.UUID(hashlib.md5(str(g).encode()).hexdigest())) for g in range(1, 2001)],
            "images": [hashlib.md5(str(g).encode()).digest() for g in range(1, 2001)],
            "pairs": {hashlib.md5(str(g).encode()).hexdigest(): hashlib.md5(str(g + 1).encode()).hexdigest()
                      for g in range(1, 301)}},
        2: {"note": None, "counts": None, "ids": None, "images": None, "pairs": None},
    },
}  # fmt: skip
ROW_IDS = {"m_numbers": [1, 2, 3, 5, 6, 7], "m_text": [1, 2, 3, 5], "m_time": [1, 2, 3, 5], "m_docs": [1, 2, 3, 5],
           "m_arrays": [1, 2, 3, 5], "m_parts": [1, 2, 3], "m_large": [1, 2], "m_toasted": [1, 2]}  # fmt: skip


def _comparable(value: Any, like: Any) -> Any:
    """Silver's value in the form of the expected one: DuckDB holds unconstrained NUMERIC (76 digits) and
    JSON as text, and returns zoned timestamps in its session's zone."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    if isinstance(value, str) and isinstance(like, Decimal):
        return Decimal(value)
    if isinstance(value, list) and isinstance(like, list) and len(value) == len(like):
        return [_comparable(v, w) for v, w in zip(value, like, strict=True)]
    if isinstance(value, str) and isinstance(like, dict):
        return json.loads(value)
    return value


def _assert_silver_holds_what_was_written(
    warehouse: Path, expected: dict[str, dict[int, dict[str, Any]]] = EXPECTED
) -> None:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for table, rows in expected.items():
            ids = [int(r[0]) for r in conn.execute(f"select id from silver.{table} order by id").fetchall()]
            assert ids == ROW_IDS[table], table  # row 4 of each table was deleted
            for row_id, columns in rows.items():
                names = list(columns)
                found = conn.execute(f"select {', '.join(names)} from silver.{table} where id = ?", [row_id]).fetchone()
                assert found is not None, (table, row_id)
                for name, want, got in zip(names, columns.values(), found, strict=True):
                    both_nan = all(isinstance(v, float) and math.isnan(v) for v in (want, got))
                    assert both_nan or _comparable(got, want) == want, (
                        f"{table}[{row_id}].{name}: {str(got)[:80]!r} != {str(want)[:80]!r}"
                    )


def _published(settings: Settings, topic: str) -> int:
    """How many records are in ``topic`` (0 until Debezium has created it)."""
    if topic not in topic_names(settings.kafka, topic):
        return 0
    return sum(partition_ends(settings, [topic]).values())
