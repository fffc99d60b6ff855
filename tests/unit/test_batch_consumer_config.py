"""The batch consumer's configuration: confluent_kafka-style values become librdkafka's strings."""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.common.kafka import BatchConsumer, batch_consumer, clients
from services.common.kafka.batch_consumer import native_config
from services.common.settings import KafkaSettings


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
    with pytest.raises(TypeError, match=re.escape("error_cb:")):
        native_config({"group.id": "g", "error_cb": print})
    with pytest.raises(TypeError, match="logger"):
        native_config({"logger": "librdkafka"})


def test_the_factory_builds_the_same_configuration_as_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    built: dict[str, dict[str, Any]] = {}
    monkeypatch.setattr(clients, "Consumer", lambda config: built.setdefault("consumer", config))
    monkeypatch.setattr(clients, "BatchConsumer", lambda config: built.setdefault("batch", config))
    settings = KafkaSettings(extra={"session_timeout_ms": "6000"})
    overrides = {"enable.auto.commit": True, "fetch.wait.max.ms": 5}
    clients.consumer(settings, "g", **overrides)
    clients.batch_consumer(settings, "g", **overrides)
    assert built["batch"] == built["consumer"]
    assert built["batch"]["enable.auto.commit"] is False  # forced: only a checkpoint commits
    assert built["batch"]["partition.assignment.strategy"] == "cooperative-sticky"
    assert built["batch"]["session.timeout.ms"] == "6000"
    assert built["batch"]["fetch.wait.max.ms"] == 5


def test_a_bad_value_is_a_value_error_naming_its_key() -> None:
    with pytest.raises(ValueError, match=re.escape("fetch.wait.max.ms")):
        batch_consumer(_settings(), "g", **{"fetch.wait.max.ms": "soon"})


def test_calls_after_close_raise_kafka_exception_with_the_state_code() -> None:
    client = BatchConsumer({"bootstrap.servers": _settings().bootstrap_servers, "group.id": "g"})
    client.close()
    with pytest.raises(KafkaException) as raised:
        client.assignment()
    error = raised.value.args[0]
    assert error.code() == KafkaError._STATE
    assert "closed" in error.str()
    assert not error.fatal()
