from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.errors import ConfigError
from services.common.settings import load_settings


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCFLOW_POSTGRES__PORT", "35432")  # the given environment is the only one read
    settings = load_settings({})
    assert settings.postgres.port == 15432
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.kafka.topic_partitions == 6
    assert settings.connect.port() == 18083
    assert settings.lake_root() == str(settings.stack.state_dir / "lake")
    assert settings.duckdb_path() == settings.stack.state_dir / "warehouse.duckdb"


def test_nested_variables_override_defaults(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "CDCFLOW_POSTGRES__PORT": "6543",
            "CDCFLOW_KAFKA__BOOTSTRAP_SERVERS": "10.0.0.1:9092,10.0.0.2:9092",
            "CDCFLOW_KAFKA__TOPIC_PARTITIONS": "12",
            "CDCFLOW_KAFKA__EXTRA__SECURITY_PROTOCOL": "SASL_SSL",
            "CDCFLOW_STACK__STATE_DIR": str(tmp_path),
            "CDCFLOW_LAKE__BACKEND": "gcs",
            "cdcflow_log__level": "DEBUG",
            "UNRELATED": "ignored",
        }
    )
    assert settings.postgres.port == 6543
    assert settings.kafka.first_broker() == ("10.0.0.1", 9092)
    assert settings.kafka.topic_partitions == 12
    assert settings.kafka.extra == {"security.protocol": "SASL_SSL"}
    assert settings.stack.state_dir == tmp_path
    assert settings.lake.backend == "gcs"
    assert settings.log.level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CDCFLOW_POSTGRES__PORT", "not-a-port", "CDCFLOW_POSTGRES__PORT"),
        ("CDCFLOW_POSTGRES__PORT", "70000", "less than or equal to 65535"),
        ("CDCFLOW_KAFKA__BOOTSTRAP_SERVERS", "localhost", "is not host:port"),
        ("CDCFLOW_KAFKA__TOPIC_PREFIX", "../escape", "topic_prefix"),
        ("CDCFLOW_POSTGRES__DATABASE", 'x"; drop table y', "plain SQL identifier"),
        ("CDCFLOW_LAKE__BACKEND", "s3", "CDCFLOW_LAKE__BACKEND"),
        ("CDCFLOW_CONNECT__URL", "ftp://x", "http(s) URL"),
        ("CDCFLOW_POSTGRES__NO_SUCH_FIELD", "1", "CDCFLOW_POSTGRES__NO_SUCH_FIELD"),
        ("CDCFLOW_WRITER__POLL_BATCH", str((1 << 20) + 1), "less than or equal to 1048576"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as caught:
        load_settings({variable: value})
    assert message in str(caught.value)


def test_a_scalar_and_a_nested_value_for_one_name_conflict() -> None:
    with pytest.raises(ConfigError, match="conflicts"):
        load_settings({"CDCFLOW_POSTGRES": "x", "CDCFLOW_POSTGRES__PORT": "1"})


@pytest.mark.parametrize(
    "environ",
    [
        {"CDCFLOW_KAFKA__EXTRA": "x", "CDCFLOW_KAFKA__EXTRA__ACKS": "all"},
        {"CDCFLOW_KAFKA__EXTRA__ACKS": "all", "CDCFLOW_KAFKA__EXTRA": "x"},
        # a valid scalar would otherwise win silently
        {"CDCFLOW_KAFKA__TOPIC_PREFIX__X": "y", "CDCFLOW_KAFKA__TOPIC_PREFIX": "shop"},
    ],
)
def test_a_dict_given_whole_and_in_parts_names_both_variables(environ: dict[str, str]) -> None:
    name, whole = sorted(environ, key=len, reverse=True)
    with pytest.raises(ConfigError, match=f"^{name} conflicts with {whole}$"):
        load_settings(environ)


def test_a_value_is_not_read_as_json() -> None:
    with pytest.raises(ConfigError, match="CDCFLOW_KAFKA__EXTRA: Input should be a valid dictionary"):
        load_settings({"CDCFLOW_KAFKA__EXTRA": '{"acks": "all"}'})


def test_lists_are_space_separated() -> None:
    settings = load_settings(
        {
            "CDCFLOW_WRITER__EXCLUDE_TABLES": "cdcflow.heartbeat  lending.audit",
            "CDCFLOW_WRITER__EXCLUDE_COLUMNS": r"lending\.customers\.ssn lending\..*\.note_{1,3}",
            "CDCFLOW_TRANSFORM__SELECT": "silver +fct_payments",
            "CDCFLOW_TRANSFORM__EXCLUDE": "tag:slow,tag:big",
        }
    )
    assert settings.writer.exclude_tables == ["cdcflow.heartbeat", "lending.audit"]
    assert settings.writer.exclude_columns == [r"lending\.customers\.ssn", r"lending\..*\.note_{1,3}"]
    assert settings.transform.select == ["silver", "+fct_payments"]
    assert settings.transform.exclude == ["tag:slow,tag:big"]  # a dbt intersection stays one selector


def test_variables_that_are_no_settings_are_ignored(tmp_path: Path) -> None:
    settings = load_settings({"CDCFLOW_HOME": str(tmp_path), "CDCFLOW_SECRETS_DIR": str(tmp_path), "CDCFLOW_X": "1"})
    assert settings == load_settings({})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CDCFLOW_WRITER__GROUP_ID", "a/b"),
        ("CDCFLOW_WRITER__GROUP_ID", ""),
        ("CDCFLOW_ENRICHER__INSTANCE_ID", "pod 1"),
        ("CDCFLOW_DLQ__GROUP_ID", "a:b"),
    ],
)
def test_group_ids_are_kafka_names(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable}: "):
        load_settings({variable: value})


def test_secrets_are_masked_in_every_dump() -> None:
    settings = load_settings(
        {
            "CDCFLOW_POSTGRES__PASSWORD": "hunter2-very-secret",
            "CDCFLOW_KAFKA__EXTRA__SASL_PASSWORD": "kafka-secret",
            "CDCFLOW_KAFKA__EXTRA__SASL_USERNAME": "svc-user",
        }
    )
    dumped = json.dumps(settings.safe_dump())
    assert "hunter2-very-secret" not in dumped
    assert "kafka-secret" not in dumped
    assert "svc-user" not in dumped  # every sasl.* value is treated as sensitive
    assert settings.safe_dump()["postgres"]["password"] == "**********"
    assert "hunter2-very-secret" not in repr(settings)
    assert "hunter2-very-secret" not in settings.postgres.dsn(with_password=False)
    assert settings.postgres.password.get_secret_value() == "hunter2-very-secret"


def test_dsn_quotes_special_characters() -> None:
    settings = load_settings({"CDCFLOW_POSTGRES__PASSWORD": "p@ss:w/rd"})
    assert settings.postgres.dsn() == "postgresql://cdcflow:p%40ss%3Aw%2Frd@127.0.0.1:15432/lending"


def test_secrets_come_from_mounted_files_and_variables_win(tmp_path: Path) -> None:
    (tmp_path / "cdcflow_postgres__password").write_text("from-file\n")
    (tmp_path / "CDCFLOW_POSTGRES__USER").write_text("file_user")
    (tmp_path / "unrelated").write_text("x")
    settings = load_settings({"CDCFLOW_SECRETS_DIR": str(tmp_path), "CDCFLOW_POSTGRES__USER": "env_user"})
    assert settings.postgres.password.get_secret_value() == "from-file"
    assert settings.postgres.user == "env_user"
    assert load_settings({"CDCFLOW_SECRETS_DIR": str(tmp_path)}).postgres.user == "file_user"


def test_a_secrets_dir_that_is_no_directory_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for missing in (tmp_path / "file", tmp_path / "nothing"):
        assert load_settings({"CDCFLOW_SECRETS_DIR": str(missing)}) == load_settings({})


def test_connector_environment_carries_the_credentials_for_connect() -> None:
    env = load_settings({"CDCFLOW_POSTGRES__PASSWORD": "s3cret", "CDCFLOW_KAFKA__TOPIC_PARTITIONS": "3"})
    values = env.connector_env()
    assert values["CDCFLOW_POSTGRES__PASSWORD"] == "s3cret"
    assert values["CDCFLOW_KAFKA__TOPIC_PARTITIONS"] == "3"


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(Exception, match="frozen"):
        settings.postgres.port = 1  # type: ignore[misc]


def test_credentials_inside_urls_are_masked() -> None:
    settings = load_settings(
        {
            "CDCFLOW_WRITER__SCHEMA_REGISTRY_URL": "https://svc:s3cr3t@registry.example:8081",
            "CDCFLOW_CONNECT__URL": "http://admin:pw@127.0.0.1:8083",
        }
    )
    dumped = json.dumps(settings.safe_dump())
    assert "s3cr3t" not in dumped
    assert "pw@" not in dumped
    assert settings.safe_dump()["writer"]["schema_registry_url"] == "https://**********@registry.example:8081"


def test_with_bigquery_a_table_is_loaded_at_most_once_a_minute_by_default() -> None:
    """BigQuery allows 1,500 load jobs per table per day; DuckDB has no quota."""
    assert load_settings({"CDCFLOW_WAREHOUSE__BACKEND": "bigquery"}).loader.min_table_interval_s == 60.0
    assert load_settings({}).loader.min_table_interval_s == 0.0
    chosen = {"CDCFLOW_WAREHOUSE__BACKEND": "bigquery", "CDCFLOW_LOADER__MIN_TABLE_INTERVAL_S": "300"}
    assert load_settings(chosen).loader.min_table_interval_s == 300.0
