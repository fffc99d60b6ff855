"""The writer started while Kafka is out of reach: one clear line naming the servers, not a client traceback
(no Kafka: nothing listens on the discard port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.errors import TransientError
from services.common.kafka.clients import KafkaUnreachableError, ensure_topics
from services.common.settings import KafkaSettings, repo_root

_NOWHERE = "127.0.0.1:9"


def test_creating_topics_without_a_broker_is_our_transient_error_naming_the_servers() -> None:
    with pytest.raises(KafkaUnreachableError) as caught:
        ensure_topics(KafkaSettings(bootstrap_servers=_NOWHERE), ["cdcflow.nowhere"], timeout_s=2)
    assert isinstance(caught.value, TransientError)
    assert f"no Kafka broker at {_NOWHERE} answered within 2 s" in str(caught.value)
    assert "CDCFLOW_KAFKA__BOOTSTRAP_SERVERS" in str(caught.value)


def test_the_writer_without_kafka_ends_with_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CDCFLOW_KAFKA__BOOTSTRAP_SERVERS": _NOWHERE,
        "CDCFLOW_LAKE__ROOT": str(tmp_path / "lake"),
        "CDCFLOW_WRITER__STATE_DIR": str(tmp_path / "state"),
        "CDCFLOW_WRITER__HEALTH_PORT": "0",
        "CDCFLOW_LOG__FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.consumer"],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: no Kafka broker at {_NOWHERE} answered"), lines[-1]
    events = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    (failed,) = [e for e in events if e["event"] == "writer.failed"]
    assert failed["kind"] == "KafkaUnreachableError"
