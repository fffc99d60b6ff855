"""librdkafka's own messages become structured log lines, not raw stderr."""

from __future__ import annotations

import io
import json
import socket

from services.common.kafka import producer
from services.common.logging import configure_logging
from services.common.settings import KafkaSettings, LogSettings


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe is closed


def test_librdkafka_messages_are_json_log_events() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out)
    client = producer(KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}"))
    client.produce("t", b"v")
    for _ in range(20):  # log lines are served by poll
        client.poll(0.1)
        if out.getvalue():
            break
    client.purge()
    client.flush(0)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    refused = [line for line in lines if line.get("logger") == "librdkafka"]
    assert refused, out.getvalue()
    assert refused[0]["level"] == "error"
    assert "Connection refused" in refused[0]["event"]
    assert not any(key.startswith("_") for key in refused[0])
