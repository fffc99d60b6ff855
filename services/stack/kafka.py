"""A single-node KRaft Kafka broker."""

from __future__ import annotations

import base64
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template

from services.common.kafka import KafkaException, admin_client
from services.common.settings import KafkaSettings, StackSettings
from services.stack.errors import ComponentFailedError
from services.stack.jvm import java_argv
from services.stack.processes import ManagedProcess, ensure_port_free, wait_for

__all__ = ["KafkaBroker", "new_cluster_id"]


@dataclass(frozen=True, slots=True)
class KafkaBroker:
    kafka: KafkaSettings
    stack: StackSettings

    @property
    def home(self) -> Path:
        return self.stack.state_dir / "kafka"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name="kafka",
            pid_file=self.stack.state_dir / "run" / "kafka.pid",
            log_file=self.stack.state_dir / "logs" / "kafka.log",
            marker=str(self.config_file),
        )

    def healthy(self) -> bool:
        try:
            # a probe expects refusals while the broker starts: librdkafka must not print each one
            admin_client(self.kafka, log_level=0).list_topics(timeout=2)
            return True
        except KafkaException:
            return False

    def start(self, timeout_s: float) -> None:
        self._render_config()
        self._format_storage()
        if not self.process.running():
            host, port = self.kafka.first_broker()
            ensure_port_free("Kafka", host, port)
            ensure_port_free("the Kafka controller", "127.0.0.1", self.stack.kafka_controller_port)
            argv = java_argv(self.stack.connect_dir, self.stack.broker_heap, "kafka.Kafka", str(self.config_file))
            self.process.start(argv)
        wait_for("Kafka", self.healthy, timeout_s, alive=self.process.running, log=self.process.log_file)

    def stop(self) -> bool:
        return self.process.stop(grace_s=60)

    def _render_config(self) -> None:
        _, broker_port = self.kafka.first_broker()
        template = Template((self.stack.connect_dir / "server.properties").read_text())
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            template.substitute(
                broker_port=broker_port,
                controller_port=self.stack.kafka_controller_port,
                log_dir=self.home / "data",
                partitions=self.kafka.topic_partitions,
            )
        )

    def _format_storage(self) -> None:
        """Format the KRaft log folder once; a formatted folder carries meta.properties."""
        if (self.home / "data" / "meta.properties").exists():
            return
        argv = java_argv(
            self.stack.connect_dir,
            "256m",
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.config_file),
        )
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ComponentFailedError(f"formatting Kafka storage failed: {done.stdout}\n{done.stderr}")


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes in URL-safe base64 that never starts with "-", which the storage
    tool's argument parser would read as an option (Kafka's own ``Uuid.randomUuid`` draws again too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
