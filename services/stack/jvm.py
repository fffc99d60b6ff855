"""The JVM half of the stack: Kafka and Connect jars from ``connect/pom.xml``, and how to launch them."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from services.stack.errors import ComponentFailedError, MissingPrerequisiteError

__all__ = ["agent_jar", "ensure_jars", "java_argv", "plugin_root"]

_JAVA_HINT = "java (17 or newer) was not found on PATH. Install it with `apt-get install openjdk-17-jre-headless`."
_MVN_HINT = (
    "The Kafka and Debezium jars are missing from connect/lib and `mvn` was not found to fetch them. "
    "Install Maven with `apt-get install maven`, then run `make jars`."
)


def plugin_root(connect_dir: Path) -> Path:
    """Connect's ``plugin.path``: the folder that *contains* ``debezium-connector-postgres/``."""
    return connect_dir / "plugins"


def agent_jar(connect_dir: Path) -> Path | None:
    """Prometheus's JMX exporter java agent (``connect/agents/``), the newest version there; None if missing."""
    found = (connect_dir / "agents").glob("jmx_prometheus_javaagent-*.jar")
    return max(found, key=lambda jar: tuple(int(n) for n in re.findall(r"\d+", jar.stem)), default=None)


def _jars_present(connect_dir: Path) -> bool:
    lib = connect_dir / "lib"
    plugin = plugin_root(connect_dir) / "debezium-connector-postgres"
    return (
        any(lib.glob("kafka_2.13-*.jar"))
        and any(plugin.glob("debezium-connector-postgres-*.jar"))
        and agent_jar(connect_dir) is not None
    )


def ensure_jars(connect_dir: Path) -> None:
    """Fetch the jars with Maven unless they are already there (they are reused across runs)."""
    if _jars_present(connect_dir):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingPrerequisiteError(_MVN_HINT)
    done = subprocess.run(
        [mvn, "-B", "-q", "-f", str(connect_dir / "pom.xml"), "package"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not _jars_present(connect_dir):
        raise ComponentFailedError(f"fetching the Kafka/Debezium jars failed:\n{done.stdout}\n{done.stderr}")


def java_argv(connect_dir: Path, heap: str, main_class: str, *args: str, jvm_options: Sequence[str] = ()) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise MissingPrerequisiteError(_JAVA_HINT)
    return [
        java,
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={connect_dir / 'log4j2.properties'}",
        *jvm_options,
        "-cp",
        f"{connect_dir / 'lib'}/*",
        main_class,
        *args,
    ]
