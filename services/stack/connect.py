"""Kafka Connect (distributed mode, one worker) running the Debezium PostgreSQL connector."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import httpx

from services.common.settings import Settings
from services.stack.errors import ComponentFailedError
from services.stack.jvm import agent_jar, java_argv, plugin_root
from services.stack.processes import ManagedProcess, ensure_port_free, wait_for

__all__ = ["ConnectWorker", "captured", "connector_names", "load_connector", "resolve_env", "source_clashes"]

_DEBEZIUM_CLASS = "io.debezium.connector.postgresql.PostgresConnector"


def load_connector(connect_dir: Path, name: str) -> dict[str, str]:
    """The flat config of ``connect/connectors/<name>.json``; credentials stay ``${env:…}`` references."""
    path = connect_dir / "connectors" / f"{name}.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ComponentFailedError(f"no connector definition at {path}") from None
    config = document.get("config", document)
    return {str(k): str(v) for k, v in config.items()}


def captured(config: dict[str, str], table: str) -> bool:
    """Whether the connector's lists take ``schema.table``: Debezium matches each as whole regexes, an include
    list admitting only what it names and an exclude list (set instead of it) everything else."""

    def takes(kind: str, name: str) -> bool:
        def patterns(key: str) -> list[str]:
            return [p.strip() for p in config.get(f"{kind}.{key}.list", "").split(",") if p.strip()]

        if included := patterns("include"):
            return any(re.fullmatch(p, name) for p in included)
        return not any(re.fullmatch(p, name) for p in patterns("exclude"))

    return takes("schema", table.split(".", 1)[0]) and takes("table", table)


def connector_names(connect_dir: Path) -> list[str]:
    """Every source: one connector file each in ``connect/connectors/``."""
    return sorted(p.stem for p in (connect_dir / "connectors").glob("*.json"))


def resolve_env(value: str, env: dict[str, str]) -> str:
    """A config value with its ``${env:NAME}`` references filled in as the Connect worker fills them."""
    return re.sub(r"\$\{env:([A-Za-z0-9_]+)\}", lambda m: env.get(m.group(1), m.group(0)), value)


# Settings two sources must never share: each source has its own replication slot and publication, and
# Debezium names its JMX metrics after the topic prefix (a second connector with the same prefix collides
# with the first: its streaming starts late and its metrics are lost).
_UNIQUE_PER_SOURCE = ("topic.prefix", "slot.name", "publication.name")


def source_clashes(configs: dict[str, dict[str, str]], env: dict[str, str]) -> list[str]:
    """What two connector configs share that must be their own, one sentence each."""
    clashes = []
    for key in _UNIQUE_PER_SOURCE:
        owners: dict[str, list[str]] = {}
        for name, config in configs.items():
            if key in config:
                owners.setdefault(resolve_env(config[key], env), []).append(name)
        clashes += [
            f"connectors {', '.join(names)} share {key}={value!r}" for value, names in owners.items() if len(names) > 1
        ]
    return clashes


@dataclass(frozen=True, slots=True)
class ConnectWorker:
    settings: Settings

    @property
    def home(self) -> Path:
        return self.settings.stack.state_dir / "connect"

    @property
    def config_file(self) -> Path:
        return self.home / "connect-distributed.properties"

    @property
    def process(self) -> ManagedProcess:
        state = self.settings.stack.state_dir
        return ManagedProcess(
            name="connect",
            pid_file=state / "run" / "connect.pid",
            log_file=state / "logs" / "connect.log",
            marker=str(self.config_file),
        )

    @property
    def url(self) -> str:
        return self.settings.connect.url

    @property
    def jmx_exporter_url(self) -> str | None:
        """Where Prometheus scrapes Debezium's metrics from this worker; None when the exporter is off."""
        port = self.settings.connect.jmx_exporter_port
        return f"http://127.0.0.1:{port}/metrics" if port else None

    def jmx_exporter_status(self) -> dict[str, str]:
        """Whether the exporter answers: a worker started before it was configured serves none until restarted."""
        url = self.jmx_exporter_url
        if url is None:
            return {}
        try:
            serving = httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            serving = False
        return {"jmx_exporter": url, "jmx_exporter_state": "serving" if serving else "not serving"}

    def jmx_exporter_options(self) -> list[str]:
        """The JVM option that loads Prometheus's JMX exporter with ``connect/jmx-exporter.yml``, on 127.0.0.1."""
        port = self.settings.connect.jmx_exporter_port
        if not port:
            return []
        connect_dir = self.settings.stack.connect_dir
        jar = agent_jar(connect_dir)
        if jar is None:
            raise ComponentFailedError(
                f"the JMX exporter agent is missing from {connect_dir / 'agents'}: run `make jars`"
            )
        rules = (connect_dir / "jmx-exporter.yml").resolve()
        return [f"-javaagent:{jar.resolve()}=127.0.0.1:{port}:{rules}"]

    def _get(self, path: str, timeout: float = 3.0) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=timeout)

    def healthy(self) -> bool:
        try:
            return self._get("/health").status_code == 200 and self._plugin_loaded()
        except httpx.HTTPError:
            return False

    def _plugin_loaded(self) -> bool:
        plugins = self._get("/connector-plugins").json()
        return any(p.get("class") == _DEBEZIUM_CLASS for p in plugins)

    def start(self, timeout_s: float) -> None:
        self._render_config()
        if not self.process.running():
            ensure_port_free("Kafka Connect", "127.0.0.1", self.settings.connect.port())
            if self.settings.connect.jmx_exporter_port:
                ensure_port_free("Connect's JMX exporter", "127.0.0.1", self.settings.connect.jmx_exporter_port)
            stack = self.settings.stack
            argv = java_argv(
                stack.connect_dir,
                stack.connect_heap,
                "org.apache.kafka.connect.cli.ConnectDistributed",
                str(self.config_file),
                jvm_options=self.jmx_exporter_options(),
            )
            self.process.start(argv, env=self.settings.connector_env())
        wait_for("Kafka Connect", self.healthy, timeout_s, alive=self.process.running, log=self.process.log_file)

    def stop(self) -> bool:
        return self.process.stop(grace_s=60)

    def register(self, name: str) -> dict[str, Any]:
        """Create or update the connector of ``connect/connectors/<name>.json``."""
        return self.put(name, load_connector(self.settings.stack.connect_dir, name))

    def put(self, name: str, config: dict[str, str]) -> dict[str, Any]:
        """Create or update a connector; PUT of the same config is a no-op, so re-running is safe."""
        response = httpx.put(f"{self.url}/connectors/{name}/config", json=config, timeout=60)
        if response.status_code >= 400:
            raise ComponentFailedError(f"registering connector {name!r} failed: {response.text}")
        body: dict[str, Any] = response.json()
        self._restart_failed(name)
        return body

    def _restart_failed(self, name: str) -> None:
        """A task that failed under an earlier config stays FAILED until restarted."""
        status = self.connector_status(name) or {}
        failed = status.get("connector", {}).get("state") == "FAILED" or any(
            t.get("state") == "FAILED" for t in status.get("tasks", [])
        )
        if failed:
            httpx.post(f"{self.url}/connectors/{name}/restart?includeTasks=true&onlyFailed=true", timeout=30)
            time.sleep(1.0)  # the restart is asynchronous; the state is re-read by the caller

    def restart(self, name: str, timeout_s: float) -> None:
        """Restart the connector and its tasks, e.g. so a filtered publication picks up new tables."""
        response = httpx.post(f"{self.url}/connectors/{name}/restart?includeTasks=true", timeout=30)
        if response.status_code >= 400:
            raise ComponentFailedError(f"restarting connector {name!r} failed: {response.text}")
        self.wait_running(name, timeout_s)

    def connectors(self) -> list[str]:
        """The names of the connectors registered with the worker."""
        response = self._get("/connectors", timeout=10)
        if response.status_code >= 400:
            raise ComponentFailedError(f"listing connectors failed: {response.text}")
        return sorted(str(n) for n in response.json())

    def request_restart(self, name: str, *, only_failed: bool) -> dict[str, Any] | None:
        """Ask Connect to restart a connector and its tasks (only the failed ones with ``only_failed``); the
        states it reports for them right after, or None when it answered without a body (nothing to do)."""
        flag = "true" if only_failed else "false"
        response = httpx.post(f"{self.url}/connectors/{name}/restart?includeTasks=true&onlyFailed={flag}", timeout=30)
        if response.status_code == 404:
            raise ComponentFailedError(f"no connector {name!r} is registered")
        if response.status_code >= 400:
            raise ComponentFailedError(f"restarting connector {name!r} failed: {response.text}")
        if response.status_code == 204 or not response.content:
            return None
        body: dict[str, Any] = response.json()
        return body

    def delete(self, name: str) -> bool:
        """Remove a connector (its replication slot stays: the caller drops it). False if there was none."""
        response = httpx.delete(f"{self.url}/connectors/{name}", timeout=60)
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise ComponentFailedError(f"deleting connector {name!r} failed: {response.text}")
        return True

    def connector_status(self, name: str) -> dict[str, Any] | None:
        try:
            response = self._get(f"/connectors/{name}/status")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body

    def wait_running(self, name: str, timeout_s: float, *, settle_s: float = 2.0) -> None:
        """Wait until the connector and its tasks run, and still run ``settle_s`` later.

        A task reports RUNNING before it has read its offsets; one that cannot resume fails a moment later.
        """
        self._wait_state(name, timeout_s)
        time.sleep(settle_s)
        self._wait_state(name, timeout_s)

    def _wait_state(self, name: str, timeout_s: float) -> None:
        def running() -> bool:
            status = self.connector_status(name)
            if status is None:
                return False
            tasks = status.get("tasks", [])
            failed = [t for t in tasks if t.get("state") == "FAILED"]
            if failed:
                raise ComponentFailedError(f"connector {name!r} task failed: {failed[0].get('trace', '')[:2000]}")
            return (
                status["connector"]["state"] == "RUNNING"
                and bool(tasks)
                and all(t.get("state") == "RUNNING" for t in tasks)
            )

        wait_for(f"connector {name}", running, timeout_s, alive=self.process.running, log=self.process.log_file)

    def _render_config(self) -> None:
        stack = self.settings.stack
        template = Template((stack.connect_dir / "connect-distributed.properties").read_text())
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            template.substitute(
                bootstrap_servers=self.settings.kafka.bootstrap_servers,
                rest_port=self.settings.connect.port(),
                plugin_path=plugin_root(stack.connect_dir).resolve(),
            )
        )
