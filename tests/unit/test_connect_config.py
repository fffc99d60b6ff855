"""The connector and worker files in connect/ keep the settings the pipeline relies on."""

from __future__ import annotations

import re

from services.common.kafka import MAX_RECORD_BYTES
from services.common.settings import load_settings, repo_root
from services.stack.connect import connector_names, load_connector, resolve_env, source_clashes
from services.stack.sources import RECORD_SIZE_KEYS


def test_lending_connector_settings() -> None:
    config = load_connector(repo_root() / "connect", "lending")
    assert config["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert config["plugin.name"] == "pgoutput"
    assert config["publication.autocreate.mode"] == "filtered"
    assert config["slot.name"] == "cdcflow_lending"
    assert int(config["heartbeat.interval.ms"]) > 0
    assert "cdcflow.heartbeat" in config["heartbeat.action.query"]
    assert "cdcflow\\.heartbeat" in config["table.include.list"]  # the heartbeat table is published
    assert config["time.precision.mode"] == "adaptive_time_microseconds"
    assert config["decimal.handling.mode"] == "precise"
    assert config["skipped.operations"] == "none"  # truncates are captured
    # after the slot is dropped (stack down) or lost, resume with a new snapshot instead of failing
    assert config["snapshot.mode"] == "when_needed"
    # a partitioned table is one table downstream, whichever partition a row is in
    assert config["publish.via.partition.root"] == "true"
    # bytea as Connect bytes (base64 on the JSON wire): the only mode in which an untouched TOASTed bytea
    # carries the unavailable-value placeholder; in `base64` mode it arrives as NULL
    assert config["binary.handling.mode"] == "bytes"


def test_connector_carries_its_converters_so_any_worker_keeps_nulls() -> None:
    config = load_connector(repo_root() / "connect", "lending")
    for side in ("key", "value"):
        assert config[f"{side}.converter"] == "org.apache.kafka.connect.json.JsonConverter"
        assert config[f"{side}.converter.schemas.enable"] == "false"
        assert config[f"{side}.converter.decimal.format"] == "NUMERIC"
        # by default the JsonConverter writes a column's DEFAULT where the row holds NULL
        assert config[f"{side}.converter.replace.null.with.default"] == "false"


def test_connector_inlines_no_credentials_and_every_reference_is_provided() -> None:
    config = load_connector(repo_root() / "connect", "lending")
    for key in (
        "database.hostname",
        "database.port",
        "database.user",
        "database.password",
        "database.dbname",
    ):
        assert config[key].startswith("${env:"), key
    references = set(re.findall(r"\$\{env:([A-Z0-9_]+)\}", " ".join(config.values())))
    assert references <= set(load_settings({}).connector_env())


def test_worker_uses_json_without_embedded_schema_and_numeric_decimals() -> None:
    text = (repo_root() / "connect" / "connect-distributed.properties").read_text()
    assert "value.converter=org.apache.kafka.connect.json.JsonConverter" in text
    assert "value.converter.schemas.enable=false" in text
    assert "value.converter.decimal.format=NUMERIC" in text
    assert "value.converter.replace.null.with.default=false" in text
    assert "EnvVarConfigProvider" in text


def test_every_connector_file_is_a_source() -> None:
    connect_dir = repo_root() / "connect"
    names = connector_names(connect_dir)
    assert "lending" in names
    assert names == sorted(p.stem for p in (connect_dir / "connectors").glob("*.json"))


def test_two_sources_must_not_share_a_prefix_slot_or_publication() -> None:
    env = load_settings({}).connector_env()
    lending = load_connector(repo_root() / "connect", "lending")
    own = {**lending, "topic.prefix": "shop", "slot.name": "cdcflow_shop", "publication.name": "cdcflow_shop"}
    assert source_clashes({"lending": lending, "shop": own}, env) == []
    copied = {**lending, "slot.name": "cdcflow_shop", "publication.name": "cdcflow_shop"}  # same topic prefix
    (clash,) = source_clashes({"lending": lending, "shop": copied}, env)
    assert clash == f"connectors lending, shop share topic.prefix={env['CDCFLOW_KAFKA__TOPIC_PREFIX']!r}"
    literal = {**own, "topic.prefix": env["CDCFLOW_KAFKA__TOPIC_PREFIX"]}  # a literal equal to the resolved one
    assert len(source_clashes({"lending": lending, "shop": literal}, env)) == 1


def test_env_references_resolve_as_the_worker_resolves_them() -> None:
    env = {"CDCFLOW_POSTGRES__HOST": "db.internal"}
    assert resolve_env("${env:CDCFLOW_POSTGRES__HOST}:5432", env) == "db.internal:5432"
    assert resolve_env("${env:UNSET}", env) == "${env:UNSET}"


def test_every_connector_carries_records_as_large_as_cdcflows_topics() -> None:
    """Kafka's defaults stop near 1 MB, and a record refused by the connector's producer or its topic fails
    the task: the capture of the whole source stops on one large row."""
    connect_dir = repo_root() / "connect"
    for name in connector_names(connect_dir):
        config = load_connector(connect_dir, name)
        assert [int(config[key]) for key in RECORD_SIZE_KEYS] == [MAX_RECORD_BYTES] * 2, name
    # a value the lake writer refuses as too large still fits a record: it reaches the DLQ whole
    assert load_settings({}).writer.max_value_bytes < MAX_RECORD_BYTES


def test_no_worker_forbids_a_connectors_producer_overrides() -> None:
    workers = [
        repo_root() / "connect" / "connect-distributed.properties",
        repo_root() / "deploy" / "docker" / "connect-distributed.properties",
        repo_root() / "deploy" / "k8s" / "base" / "connect.yaml",
    ]
    for worker in workers:
        assert "connector.client.config.override.policy" not in worker.read_text(), worker  # Kafka's default: All
