"""The wheel the image installs works outside the checkout: built once (the Rust extensions compile), it
installs into a clean virtualenv, `cdcflow --help` runs, and its writer lands the shared stack's change
events as Parquet, finding schemas/ through CDCFLOW_HOME as the image does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from services.common.settings import Settings
from services.stack.runtime import Stack

CHECKOUT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv[:3]}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


def test_the_wheel_installs_cleanly_and_its_writer_lands_events(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    env = {**os.environ, "PATH": f"{Path.home() / '.cargo' / 'bin'}:{os.environ['PATH']}"}
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(CHECKOUT)], 1800, env=env
    )
    (wheel,) = wheels.glob("cdcflow-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], 120)
    _run([str(venv / "bin" / "pip"), "install", "--quiet", "-c", str(CHECKOUT / "constraints.txt"), str(wheel)], 900)

    home = tmp_path / "home"  # only what the image copies: the installed package must not reach the checkout
    for folder in ("schemas", "dbt", "connect/connectors"):
        shutil.copytree(CHECKOUT / folder, home / folder)
    cdcflow = str(venv / "bin" / "cdcflow")
    assert "consume" in _run([cdcflow, "--help"], 60, cwd=tmp_path).stdout
    where = _run([str(venv / "bin" / "python"), "-c", "import services; print(services.__file__)"], 60, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv)  # the installed copy, not the checkout

    lake = tmp_path / "lake"
    writer_env = {
        "PATH": os.environ["PATH"],
        "CDCFLOW_HOME": str(home),
        "CDCFLOW_STACK__STATE_DIR": str(tmp_path / "state"),
        "CDCFLOW_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "CDCFLOW_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "CDCFLOW_POSTGRES__HOST": settings.postgres.host,
        "CDCFLOW_POSTGRES__PORT": str(settings.postgres.port),
        "CDCFLOW_LAKE__ROOT": str(lake),
        "CDCFLOW_WRITER__GROUP_ID": f"wheel-{uuid.uuid4().hex[:8]}",
        "CDCFLOW_WRITER__HEALTH_PORT": "0",
        "CDCFLOW_WRITER__FLUSH_MAX_AGE_S": "2",
        "CDCFLOW_LOG__FORMAT": "json",
    }
    writer = subprocess.Popen([cdcflow, "consume"], cwd=tmp_path, env=writer_env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(lake.rglob("*.parquet")) and time.monotonic() < deadline and writer.poll() is None:
            time.sleep(1)
        files = list(lake.rglob("*.parquet"))
    finally:
        writer.send_signal(signal.SIGTERM)
        _, stderr = writer.communicate(timeout=90)
    assert files, stderr[-3000:]
    assert writer.returncode == 0, stderr[-3000:]
    tables = {f.relative_to(lake).parts[1] for f in files}
    assert tables <= {"lending.customers", "lending.facilities", "lending.transactions"}
