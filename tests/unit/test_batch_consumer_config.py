"""The batch consumer's configuration: confluent_kafka-style values become librdkafka's strings."""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.common.debezium.arrow_reader import NATIVE_READER
from services.common.errors import ConfigError
from services.common.kafka import batch_consumer, clients, confluent_batch
from services.common.kafka.batch_consumer import NATIVE_CONSUMER, NativeBatchConsumer, native_config
from services.common.kafka.confluent_batch import ConfluentBatchConsumer
from services.common.settings import KafkaSettings
from services.consumer import wiring
from services.consumer.wiring import WriterPath, writer_path


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe is closed


def _settings() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}")


def test_scalars_become_librdkafka_strings() -> None:
    properties, _ = native_config(
        {"group.id": "g", "enable.auto.commit": False, "check.crcs": True, "fetch.wait.max.ms": 50, "x": 0.5}
    )
    assert properties == {
        "group.id": "g",
        "enable.auto.commit": "false",
        "check.crcs": "true",
        "fetch.wait.max.ms": "50",
        "x": "0.5",
    }


def test_the_logger_is_taken_out_and_defaults_to_librdkafkas() -> None:
    mine = logging.getLogger("test.batch.config")
    properties, logger = native_config({"group.id": "g", "logger": mine})
    assert properties == {"group.id": "g"}
    assert logger is mine
    assert native_config({"group.id": "g"})[1] is logging.getLogger("librdkafka")


def test_a_value_librdkafka_cannot_take_is_a_type_error_naming_its_key() -> None:
    with pytest.raises(TypeError, match=re.escape("fetch.wait.max.ms:")):
        native_config({"group.id": "g", "fetch.wait.max.ms": [50]})
    with pytest.raises(TypeError, match="logger"):
        native_config({"logger": "librdkafka"})


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"error_cb": print}, "error_cb"),
        ({"oauth_cb": print}, "oauth_cb"),
        ({"stats_cb": print}, "stats_cb"),
        ({"sasl.mechanisms": "OAUTHBEARER"}, "OAUTHBEARER"),
        ({"sasl.mechanism": "gssapi"}, "GSSAPI"),
    ],
)
def test_what_the_native_consumer_cannot_honour_is_refused_and_points_at_confluent(
    setting: dict[str, Any], named: str
) -> None:
    """Never dropped silently: the writer stops at start-up and says which path takes the setting."""
    with pytest.raises(ConfigError, match=re.escape(named)) as refused:
        native_config({"group.id": "g", **setting})
    assert "CDCFLOW_WRITER__CONSUMER=confluent" in str(refused.value)


def test_the_factory_builds_the_same_configuration_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    built: dict[str, dict[str, Any]] = {}
    monkeypatch.setattr(clients, "Consumer", lambda config: built.setdefault("consumer", config))
    monkeypatch.setattr(clients, "NativeBatchConsumer", lambda config: built.setdefault("native", config))
    monkeypatch.setattr(confluent_batch, "Consumer", lambda config: built.setdefault("confluent", config))
    settings = KafkaSettings(extra={"session_timeout_ms": "6000"})
    overrides: dict[str, Any] = {"enable.auto.commit": True, "fetch.wait.max.ms": 5}
    clients.consumer(settings, "g", **overrides)
    clients.batch_consumer(settings, "g", **overrides)
    assert isinstance(clients.batch_consumer(settings, "g", native=False, **overrides), ConfluentBatchConsumer)
    assert built["native"] == built["consumer"] == built["confluent"]
    assert built["native"]["enable.auto.commit"] is False  # forced: only a checkpoint commits
    assert built["native"]["partition.assignment.strategy"] == "cooperative-sticky"
    assert built["native"]["session.timeout.ms"] == "6000"
    assert built["native"]["fetch.wait.max.ms"] == 5


def test_a_callers_tuning_yields_to_the_operators_extra_and_to_its_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(clients, "NativeBatchConsumer", built.append)
    settings = KafkaSettings(extra={"fetch_max_bytes": "1048576"})
    tuning = {"fetch.max.bytes": 4 << 20, "queued.max.messages.kbytes": 8192, "client.id": "tuned"}
    overrides: dict[str, Any] = {"client.id": "w-1", "enable.auto.commit": True}
    clients.batch_consumer(settings, "g", tuning=tuning, **overrides)
    (config,) = built
    assert config["fetch.max.bytes"] == "1048576"  # the operator's kafka.extra
    assert config["queued.max.messages.kbytes"] == 8192  # the caller's tuning, nobody else's
    assert config["client.id"] == "w-1"  # the caller's overrides
    assert config["enable.auto.commit"] is False  # forced: only a checkpoint commits


def test_the_consumer_and_the_json_reader_are_chosen_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    assert writer_path("auto", "auto") == WriterPath(NATIVE_CONSUMER, NATIVE_READER)
    # a writer that needs confluent_kafka's consumer (OAUTHBEARER, GSSAPI) still decodes natively where it can
    assert writer_path("confluent", "auto") == WriterPath(False, NATIVE_READER)
    assert writer_path("auto", "arrow") == WriterPath(NATIVE_CONSUMER, False)
    assert writer_path("confluent", "arrow").describe() == "confluent_kafka's consumer and Arrow's JSON reader"
    assert WriterPath(True, True).describe() == "the native consumer and the native JSON reader"
    monkeypatch.setattr(wiring, "NATIVE_CONSUMER", False)  # an install built without a Rust toolchain
    monkeypatch.setattr(wiring, "NATIVE_READER", False)
    assert writer_path("auto", "auto") == WriterPath(False, False)
    with pytest.raises(ConfigError, match="CONSUMER=native and CDCFLOW_WRITER__JSON_READER=native, but"):
        writer_path("native", "native")
    with pytest.raises(ConfigError, match="not installed"):
        writer_path("confluent", "native")


def test_a_bad_value_is_a_value_error_naming_its_key() -> None:
    bad: dict[str, Any] = {"fetch.wait.max.ms": "soon"}
    with pytest.raises(ValueError, match=re.escape("fetch.wait.max.ms")):
        batch_consumer(_settings(), "g", **bad)


def test_calls_after_close_raise_kafka_exception_with_the_state_code() -> None:
    client = NativeBatchConsumer({"bootstrap.servers": _settings().bootstrap_servers, "group.id": "g"})
    client.close()
    with pytest.raises(KafkaException) as raised:
        client.assignment()
    error = raised.value.args[0]
    assert error.code() == KafkaError._STATE
    assert "closed" in error.str()
    assert not error.fatal()
