"""Every connector file is a source: its topic prefix, the source its contracts carry, its database."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from services.common.kafka import MAX_RECORD_BYTES
from services.common.settings import Settings, load_settings, repo_root
from services.stack.connect import load_connector
from services.stack.errors import StackError
from services.stack.sources import (
    FIDELITY,
    RECORD_SIZE_KEYS,
    new_connector,
    reading_hazards,
    registrations,
    remove_source,
    sources,
    topic_prefixes,
    write_connector,
)
from tests.fixtures.net import free_port


def _connector(folder: Path, name: str, **config: str) -> None:
    (folder / "connectors").mkdir(parents=True, exist_ok=True)
    (folder / "connectors" / f"{name}.json").write_text(json.dumps({"name": name, "config": config}))


def test_the_primary_source_comes_first_and_another_is_named_by_its_prefix(tmp_path: Path) -> None:
    _connector(
        tmp_path,
        "lending",
        **{
            "topic.prefix": "${env:CDCFLOW_KAFKA__TOPIC_PREFIX}",
            "database.hostname": "${env:CDCFLOW_POSTGRES__HOST}",
            "database.port": "${env:CDCFLOW_POSTGRES__PORT}",
            "database.user": "${env:CDCFLOW_POSTGRES__USER}",
            "database.password": "${env:CDCFLOW_POSTGRES__PASSWORD}",
            "database.dbname": "${env:CDCFLOW_POSTGRES__DATABASE}",
            "publication.name": "cdcflow_lending",
        },
    )
    _connector(
        tmp_path,
        "a_shop",
        **{
            "topic.prefix": "shop",
            "database.hostname": "db.example",
            "database.port": "6543",
            "database.user": "reader",
            "database.password": "p@ss/word",
            "database.dbname": "shop",
            "publication.name": "cdcflow_shop",
        },
    )
    settings = load_settings({"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path), "CDCFLOW_POSTGRES__DATABASE": "lending"})
    primary, shop = sources(settings)
    assert (primary.connector, primary.topic_prefix, primary.source) == ("lending", "cdcflow", "")
    assert primary.dsn().endswith(f"@{settings.postgres.host}:{settings.postgres.port}/lending")
    assert (shop.connector, shop.topic_prefix, shop.source, shop.publication) == (
        "a_shop",
        "shop",
        "shop",
        "cdcflow_shop",
    )
    assert shop.dsn() == "postgresql://reader:p%40ss%2Fword@db.example:6543/shop"
    assert topic_prefixes(settings) == ["cdcflow", "shop"]


def test_without_connector_files_there_is_the_stacks_prefix_alone(tmp_path: Path) -> None:
    settings = load_settings({"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path)})
    assert sources(settings) == []
    assert topic_prefixes(settings) == [settings.kafka.topic_prefix]


def _stack_with_lending(tmp_path: Path) -> Settings:
    shutil.copytree(repo_root() / "connect" / "connectors", tmp_path / "connectors")
    return load_settings({"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path)})


def test_a_new_source_on_the_stacks_postgres_reuses_its_credentials_and_keeps_the_fidelity_defaults(
    tmp_path: Path,
) -> None:
    settings = _stack_with_lending(tmp_path)
    pg = settings.postgres
    document = new_connector(
        settings, "shop", f"postgresql://{pg.user}:secret@{pg.host}:{pg.port}/shopdb", ["public.users", "sales.orders"]
    )
    config = document["config"]
    assert document["name"] == "shop"
    assert {k: config[k] for k in ("topic.prefix", "slot.name", "publication.name")} == {
        "topic.prefix": "shop",
        "slot.name": "cdcflow_shop",
        "publication.name": "cdcflow_shop",
    }
    assert config["database.dbname"] == "shopdb"
    assert config["database.password"] == "${env:CDCFLOW_POSTGRES__PASSWORD}"  # never the DSN's password
    assert "secret" not in json.dumps(document)
    assert config["schema.include.list"] == "cdcflow,public,sales"
    assert config["table.include.list"] == r"public\.users,sales\.orders,cdcflow\.heartbeat"
    for key, value in FIDELITY.items():
        assert config[key] == value, key
    assert [int(config[key]) for key in RECORD_SIZE_KEYS] == [MAX_RECORD_BYTES] * 2
    lending = json.loads((tmp_path / "connectors" / "lending.json").read_text())["config"]
    assert config["heartbeat.action.query"] == lending["heartbeat.action.query"]
    assert config["snapshot.mode"] == lending["snapshot.mode"]
    # backfills: the same signal table, notifications on a topic of its own
    assert config["signal.data.collection"] == lending["signal.data.collection"]
    assert config["notification.sink.topic.name"] == "_cdcflow.notifications.shop"

    path = write_connector(settings, document)
    assert path == tmp_path / "connectors" / "shop.json"
    assert [s.source for s in sources(settings)] == ["", "shop"]
    with pytest.raises(StackError, match="already defined"):
        write_connector(settings, document)


def test_another_servers_password_comes_from_the_workers_environment(tmp_path: Path) -> None:
    settings = _stack_with_lending(tmp_path)
    config = new_connector(settings, "crm", "postgresql://reader:pw@db.example:6543/crm")["config"]
    assert (config["database.hostname"], config["database.port"], config["database.user"]) == (
        "db.example",
        "6543",
        "reader",
    )
    assert config["database.password"] == "${env:CDCFLOW_SOURCE_CRM_PASSWORD}"
    assert "table.include.list" not in config  # every table of the database


@pytest.mark.parametrize(
    ("name", "dsn", "tables", "why"),
    [
        ("Shop", "postgresql://u@h/db", [], "source name"),
        ("my__shop", "postgresql://u@h/db", [], "source name"),
        ("cdcflow", "postgresql://u@h/db", [], "stack's own topic prefix"),
        ("shop", "postgresql://u@h/db", ["users"], "schema.table"),
        ("shop", "postgresql:///db", [], "must name the host"),
        ("shop", "host=h user=u dbname=d bogus==", [], "not a PostgreSQL connection string"),
    ],
)
def test_a_bad_source_is_refused_with_why(tmp_path: Path, name: str, dsn: str, tables: list[str], why: str) -> None:
    with pytest.raises(StackError, match=why):
        new_connector(_stack_with_lending(tmp_path), name, dsn, tables)


def test_a_source_sharing_a_slot_with_another_is_refused(tmp_path: Path) -> None:
    settings = _stack_with_lending(tmp_path)
    document = new_connector(settings, "shop", "postgresql://u@db.example/shop")
    document["config"]["slot.name"] = "cdcflow_lending"
    with pytest.raises(StackError, match=r"share slot\.name"):
        write_connector(settings, document)
    assert not (tmp_path / "connectors" / "shop.json").exists()


def test_removing_the_primary_or_an_unknown_source_is_refused(tmp_path: Path) -> None:
    settings = _stack_with_lending(tmp_path)
    with pytest.raises(StackError, match="primary source"):
        remove_source(settings, "lending")
    with pytest.raises(StackError, match="no connector file"):
        remove_source(settings, "shop")
    assert (tmp_path / "connectors" / "lending.json").exists()


def test_a_new_source_carries_large_records_whatever_the_template_says(tmp_path: Path) -> None:
    """Smaller than cdcflow's topics take, a limit would fail the task on the first large row; larger, it stays."""
    settings = _stack_with_lending(tmp_path)
    primary = tmp_path / "connectors" / "lending.json"
    for in_template, on_the_source in ((None, MAX_RECORD_BYTES), (1 << 20, MAX_RECORD_BYTES), (64 << 20, 64 << 20)):
        document = json.loads(primary.read_text())
        for key in RECORD_SIZE_KEYS:
            document["config"].pop(key, None)
            if in_template is not None:
                document["config"][key] = str(in_template)
        primary.write_text(json.dumps(document))
        config = new_connector(settings, "shop", "postgresql://reader@db.example:5432/shop")["config"]
        assert [int(config[key]) for key in RECORD_SIZE_KEYS] == [on_the_source] * 2, in_template


def test_a_source_out_of_reach_is_registered_as_its_file_says_with_a_warning(tmp_path: Path) -> None:
    # no server on the port: the tables cannot be checked, and Connect's task will meet the same outage
    _connector(
        tmp_path,
        "far",
        **FIDELITY,
        **{
            "topic.prefix": "far",
            "database.hostname": "127.0.0.1",
            "database.port": str(free_port()),
            "database.user": "cdcflow",
            "database.password": "${env:CDCFLOW_SOURCE_FAR_PASSWORD}",
            "database.dbname": "far",
            "table.include.list": "public\\..*",
        },
    )
    settings = load_settings({"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path)})
    with capture_logs() as logs:
        configs, refused = registrations(settings, timeout_s=2)
    assert configs == {"far": load_connector(tmp_path, "far")}  # the password stays a reference
    assert configs["far"]["database.password"] == "${env:CDCFLOW_SOURCE_FAR_PASSWORD}"
    assert refused == []
    [warning] = [entry for entry in logs if entry["event"] == "source.tables_unchecked"]
    assert warning["connector"] == "far"
    assert "out of reach" in warning["error"]


def test_a_connector_file_whose_events_would_arrive_otherwise_is_not_registered(tmp_path: Path) -> None:
    lending = load_connector(repo_root() / "connect", "lending")
    assert reading_hazards(lending) == []
    changed = {
        **lending,
        "time.precision.mode": "connect",  # timestamps in milliseconds, read as microseconds
        "decimal.handling.mode": "PRECISE",  # Debezium reads its modes without regard to case
        "binary.handling.mode": "${env:BINARY_MODE}",  # Connect's to fill in: not judged
    }
    for key in ("interval.handling.mode", "value.converter.decimal.format", "publish.via.partition.root"):
        del changed[key]
    assert reading_hazards(changed) == [
        "publish.via.partition.root is left out, so its default 'false': cdcflow reads change events made with 'true'",
        "time.precision.mode is 'connect': cdcflow reads change events made with 'adaptive_time_microseconds'",
        "interval.handling.mode is left out, so its default 'numeric': cdcflow reads change events made with 'string'",
        "value.converter.decimal.format is left out, so its default 'BASE64': cdcflow reads change events "
        "made with 'NUMERIC'",
    ]
    reshaped = {
        **lending,
        "skipped.operations": "t",  # truncates never reach silver
        "column.mask.with.12.chars": "lending.customers.email",
        "transforms": "unwrap",
        "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
    }
    assert reading_hazards(reshaped) == [
        "skipped.operations is 't': cdcflow reads change events made with 'none'",
        "column.mask.with.12.chars is set: it changes the change events cdcflow reads (their values or their shape)",
        "transforms is set: it changes the change events cdcflow reads (their values or their shape)",
    ]
    # each converter by its own settings: Confluent's AvroConverter keeps a NULL only when told to, Apicurio's never
    avro = {**lending, "value.converter": "io.confluent.connect.avro.AvroConverter"}
    del avro["value.converter.decimal.format"], avro["value.converter.replace.null.with.default"]
    assert reading_hazards(avro) == [
        "value.converter.ignore.default.for.nullables is left out, so its default 'false': cdcflow reads change "
        "events made with 'true'"
    ]
    assert reading_hazards({**avro, "value.converter.ignore.default.for.nullables": "true"}) == []
    protobuf = {**avro, "value.converter": "io.confluent.connect.protobuf.ProtobufConverter"}
    assert reading_hazards(protobuf) == [
        "value.converter is 'io.confluent.connect.protobuf.ProtobufConverter': cdcflow reads values written by "
        "org.apache.kafka.connect.json.JsonConverter or io.confluent.connect.avro.AvroConverter"
    ]
    apicurio = {**avro, "value.converter": "io.apicurio.registry.utils.converter.AvroConverter"}
    assert reading_hazards(apicurio) == [
        "value.converter is Apicurio's AvroConverter (its Avro conversion has no ignore.default.for.nullables): it "
        "writes a NULL of a column that has a default as that default; use JsonConverter, or Confluent's "
        "AvroConverter with ignore.default.for.nullables=true"
    ]

    _connector(tmp_path, "lending", **{**changed, "database.port": str(free_port())})
    settings = load_settings({"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path)})
    configs, refused = registrations(settings, timeout_s=2)  # refused before its database is asked anything
    assert configs == {}
    [why] = refused
    assert why.startswith("connector 'lending' not registered: publish.via.partition.root is left out")
    assert "time.precision.mode is 'connect'" in why
