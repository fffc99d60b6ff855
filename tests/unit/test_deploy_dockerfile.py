"""The Dockerfile copies files that exist, its entry point is the `cdcflow` command, and every command the
image is run with (Compose services, Kubernetes containers) is a real `cdcflow` command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest
import yaml

from services.common.settings import load_settings
from tests.fixtures.deploy import CHECKOUT, OVERLAYS, containers, render

DOCKERFILE = CHECKOUT / "deploy" / "docker" / "Dockerfile"
CDCFLOW = str(Path(sys.executable).with_name("cdcflow"))


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) as BuildKit's parser reads them."""
    return [(c.cmd.upper(), c.original.split(None, 1)[1]) for c in dockerfile.parse_file(str(DOCKERFILE))]


def test_every_copied_file_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (CHECKOUT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = []
    for instruction, args in _instructions():
        if instruction != "COPY" or "--from=" in args:
            continue
        *sources, _destination = shlex.split(args)
        copied += sources
    assert {"services", "schemas", "dbt", "connect/connectors", "pyproject.toml", "constraints.txt"} <= set(copied)
    for source in copied:
        assert (CHECKOUT / source).exists(), source
        assert source not in ignored, f"{source} is in .dockerignore"
        assert source.split("/")[0] not in ignored, f"{source} is in .dockerignore"


def test_stages_and_runtime_user() -> None:
    instructions = _instructions()
    stages = [args.split()[-1] for instruction, args in instructions if instruction == "FROM"]
    assert stages == ["build", "connect-jars", "connect", "runtime"]
    runtime = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]
    assert ("USER", "10001:10001") in runtime
    assert ("ENTRYPOINT", '["cdcflow"]') in runtime
    assert not any(ins == "RUN" and re.search(r"\b(apt-get|gcc|cargo|rustup)\b", args) for ins, args in runtime)
    env = " ".join(args for ins, args in runtime if ins == "ENV")
    assert "CDCFLOW_HOME=/opt/cdcflow-home" in env
    assert "CDCFLOW_STACK__STATE_DIR=/var/lib/cdcflow" in env


def test_every_base_image_is_pinned_to_a_version() -> None:
    instructions = _instructions()
    args = dict(a.split("=", 1) for ins, a in instructions if ins == "ARG" and "=" in a)
    images = [a.split()[0] for ins, a in instructions if ins == "FROM"]
    external = [args.get(i.strip("${}"), i) for i in images if i not in ("build", "connect-jars")]
    assert len(external) == 4
    for image in external:
        _, _, tag = image.partition(":")
        assert re.match(r"\d+\.\d+", tag), f"{image} is not pinned to a version"


def test_the_entry_point_is_the_packages_console_script() -> None:
    scripts = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["cdcflow"] == "services.cli:main"


def test_the_rust_toolchain_is_the_one_the_crates_build_with() -> None:
    pinned = re.search(r"ARG RUST_VERSION=(\S+)", DOCKERFILE.read_text()).group(1)  # type: ignore[union-attr]
    major, minor, _ = (int(x) for x in pinned.split("."))
    assert (major, minor) >= (1, 78)  # the README's minimum for the crates' dependencies


def _image_commands() -> set[tuple[str, ...]]:
    commands: set[tuple[str, ...]] = set()
    compose = yaml.safe_load((CHECKOUT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        if "cdcflow:" in str(service.get("image", "")):
            commands.add(tuple(service["command"]))
    for overlay in OVERLAYS:
        for obj in render(overlay):
            if obj["kind"] in ("Deployment", "StatefulSet", "CronJob", "Job"):
                for container in containers(obj, init=False):
                    if container["image"].split(":")[0].endswith("cdcflow"):
                        commands.add(tuple(container["args"]))
    return commands


def _help_path(args: tuple[str, ...]) -> list[str]:
    """The command words before the first option: `load --every 10` → [load]; `deploy register` → both."""
    words = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
    return words


@pytest.mark.parametrize("args", sorted(_image_commands()), ids=" ".join)
def test_every_command_the_image_runs_is_a_cdcflow_command(args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [CDCFLOW, *_help_path(args), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    for option in (a for a in args if a.startswith("--")):
        assert option in done.stdout, f"`cdcflow {' '.join(_help_path(args))}` has no {option}"


def test_the_long_running_services_are_all_run() -> None:
    words = {_help_path(a)[0] for a in _image_commands()}
    assert {"consume", "load", "transform", "deploy"} <= words


def test_the_runtime_exposes_each_services_health_port() -> None:
    instructions = _instructions()
    runtime = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]
    exposed = {int(port) for ins, args in runtime if ins == "EXPOSE" for port in args.split()}
    defaults = load_settings({})
    assert exposed == {
        getattr(defaults, s).health_port for s in ("writer", "loader", "transform", "monitor", "enricher")
    }


def test_the_build_stage_has_every_rust_crate_the_wheel_compiles() -> None:
    modules = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools-rust"]["ext-modules"]
    instructions = _instructions()
    build = instructions[: next(i for i, (ins, _) in enumerate(instructions) if ins == "FROM" and i > 1)]
    copied = [s.rstrip("/") for ins, args in build if ins == "COPY" for s in shlex.split(args)[:-1]]
    assert len(modules) == 2
    for module in modules:
        crate = str(Path(module["path"]).parent)
        assert any(crate == c or crate.startswith(c + "/") for c in copied), f"the build stage lacks {crate}"
