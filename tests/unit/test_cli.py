"""The ``cdcflow`` command as users type it: every command the README shows exists, and `load` runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb

from services.common.lake import LocalLake
from services.common.settings import repo_root
from tests.fixtures.lakefiles import LakeFiles, lending_contract

CDCFLOW = str(Path(sys.executable).with_name("cdcflow"))
_GROUPS = ("schemas", "stack", "source", "backfill", "connector")  # commands whose second word is a subcommand


def _readme_command_paths() -> set[tuple[str, ...]]:
    """``cdcflow <command> [<subcommand>]`` wherever the README shows code."""
    text = (repo_root() / "README.md").read_text()
    code = re.findall(r"```.*?```", text, re.S) + re.findall(r"`[^`\n]+`", re.sub(r"```.*?```", "", text, flags=re.S))
    paths: set[tuple[str, ...]] = set()
    for chunk in code:
        for found in re.finditer(r"cdcflow((?: [a-z][a-z-]*){1,2})", chunk):
            words = found.group(1).split()
            paths.add(tuple(words))
    return paths


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CDCFLOW, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def test_every_command_the_readme_shows_exists() -> None:
    paths = _readme_command_paths()
    assert {
        ("load",),
        ("schemas", "generate"),
        ("schemas", "check"),
        ("stack", "up"),
        ("verify",),
        ("source", "add-table"),
        ("backfill", "start"),
        ("backfill", "status"),
        ("backfill", "stop"),
        ("backfill", "deletes"),
        ("connector", "status"),
        ("connector", "restart"),
    } <= {p[:2] if p[0] in _GROUPS else p[:1] for p in paths}
    for words in sorted(paths):
        # a second word is a subcommand only under a group; elsewhere it is prose after the command
        command = list(words) if words[0] in _GROUPS else list(words[:1])
        done = _run(*command, "--help")
        assert done.returncode == 0, f"`cdcflow {' '.join(command)}`: {done.stderr[-500:]}"


def test_load_once_lands_pending_files_in_bronze(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    LakeFiles(lake, lending_contract("transactions")).write(range(25))
    env = {
        **os.environ,
        "CDCFLOW_LAKE__ROOT": str(tmp_path / "lake"),
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(tmp_path / "wh.duckdb"),
        "CDCFLOW_LOADER__HEALTH_PORT": "0",
    }
    done = _run("load", "--once", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from bronze.lending__transactions").fetchone() == (25,)
    refused = _run("load", "--once", "--shard", "2/2", env=env)
    assert refused.returncode == 2
    assert "shard must be I/N" in refused.stderr


def test_the_enricher_refuses_topics_of_avro_values(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CDCFLOW_WRITER__VALUE_FORMAT": "avro-confluent",
        "CDCFLOW_WRITER__SCHEMA_REGISTRY_URL": "http://127.0.0.1:9",
        "CDCFLOW_ENRICHER__STATE_DIR": str(tmp_path / "state"),
        "CDCFLOW_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",  # nothing listens: it must not get that far
    }
    refused = _run("enrich", env=env)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "the enricher reads Debezium JSON change events" in refused.stderr
    assert "CDCFLOW_WRITER__VALUE_FORMAT=avro-confluent" in refused.stderr
    assert not (tmp_path / "state").exists()  # refused before it opened anything
