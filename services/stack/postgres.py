"""A PostgreSQL cluster under the state folder, configured for logical decoding."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from services.common.settings import PostgresSettings
from services.stack.errors import ComponentFailedError, MissingPrerequisiteError
from services.stack.processes import ensure_port_free, pid_alive, wait_for

__all__ = ["PostgresServer", "find_pg_bin"]

_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them with "
    "`apt-get install postgresql` (Debian/Ubuntu; `make install` does it when run as root), "
    "or put their folder on PATH or in CDCFLOW_PG_BIN."
)
_RUN_AS = "postgres"  # initdb and postgres refuse to run as root


def find_pg_bin() -> Path:
    """The folder holding initdb and pg_ctl: CDCFLOW_PG_BIN, Debian's newest, or PATH."""
    override = os.environ.get("CDCFLOW_PG_BIN")
    candidates = [Path(override)] if override else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        candidates += [v / "bin" for v in reversed(versions)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise MissingPrerequisiteError(_INSTALL_HINT)


@dataclass(frozen=True, slots=True)
class PostgresServer:
    settings: PostgresSettings
    state_dir: Path

    @property
    def root(self) -> Path:
        """Where the cluster lives: under the state folder when the server's user can reach it.

        As root the server runs as ``postgres``; a state folder inside a private directory (mode 700,
        as ``mktemp -d`` makes) is out of that user's reach, so the cluster moves to /var/tmp then.
        """
        preferred = self.state_dir / "postgres"
        if not _is_root() or _reachable_by_postgres(self.state_dir):
            return preferred
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        return Path("/var/tmp") / f"cdcflow-{digest}" / "postgres"  # noqa: S108 - owned per state dir

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def healthy(self) -> bool:
        try:
            with psycopg.connect(self.settings.dsn(), connect_timeout=2) as conn:
                conn.execute("select 1")
            return True
        except psycopg.Error:
            return False

    def start(self, timeout_s: float) -> None:
        bin_dir = find_pg_bin()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        if not self.running():
            ensure_port_free("PostgreSQL", self.settings.host, self.settings.port)
            self._run(
                bin_dir / "pg_ctl",
                "start",
                "--wait",
                f"--timeout={int(timeout_s)}",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                f"-c port={self.settings.port} -c listen_addresses={self.settings.host}",
            )
        wait_for("PostgreSQL", self._server_up, timeout_s, alive=self.running, log=self.log_file)
        self._ensure_database()

    def stop(self, timeout_s: float = 60.0) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        self._run(find_pg_bin() / "pg_ctl", "stop", "--wait", "-m", "fast", "-D", str(self.data_dir))
        # pg_ctl returns once postmaster.pid is gone, which the postmaster removes a moment before it exits
        wait_for("PostgreSQL to exit", lambda: not pid_alive(pid), timeout_s, interval_s=0.05)
        return True

    def drop_slot(self, slot: str, database: str | None = None) -> bool:
        """Drop a replication slot so the server stops retaining WAL for it; a logical slot is dropped from
        its own ``database`` (the stack's by default)."""
        settings = self.settings if database is None else self.settings.model_copy(update={"database": database})
        with psycopg.connect(settings.dsn(), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                "where slot_name = %s and not active",
                (slot,),
            ).fetchone()
        return row is not None

    def slots(self) -> list[tuple[str, bool]]:
        with psycopg.connect(self.settings.dsn(), connect_timeout=5) as conn:
            rows = conn.execute("select slot_name, active from pg_replication_slots").fetchall()
        return [(str(name), bool(active)) for name, active in rows]

    def ensure_catalog_role(self) -> None:
        """The writer's read-only role for catalog lookups: a login that can connect and read pg_catalog, in
        read-only transactions, with no privilege on any table (so it reads no row and changes nothing)."""
        role, secret = self.settings.catalog_user, self.settings.catalog_password.get_secret_value()
        with psycopg.connect(self.settings.dsn(), autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
            verb = "alter" if exists else "create"
            # the names are validated identifiers; the password is a literal quoted by the server's rules
            password = conn.execute("select quote_literal(%s)", (secret,)).fetchone()
            assert password is not None
            conn.execute(f'{verb} role "{role}" login nosuperuser nocreatedb nocreaterole noreplication'.encode())
            conn.execute(f'alter role "{role}" password {password[0]}'.encode())
            conn.execute(f'alter role "{role}" set default_transaction_read_only = on'.encode())
            conn.execute(f'grant connect on database "{self.settings.database}" to "{role}"'.encode())

    def apply_sql(self, sql: str) -> None:
        with psycopg.connect(self.settings.dsn(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.encode())

    def _initdb(self, bin_dir: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists():  # a half-made cluster from an interrupted initdb
            shutil.rmtree(self.data_dir)
        pwfile = self.root / ".pwfile"
        pwfile.unlink(missing_ok=True)
        # created private: written first and chmod-ed after, the password would be readable for a moment
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(self.settings.password.get_secret_value() + "\n")
        try:
            if _is_root():
                shutil.chown(self.root, _RUN_AS, _RUN_AS)
                shutil.chown(pwfile, _RUN_AS, _RUN_AS)
            self._run(
                bin_dir / "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.settings.user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.auto.conf"
        # prepared transactions allowed, as on a source whose applications commit in two phases
        with conf.open("a") as out:
            out.write(
                "wal_level = logical\n"
                "max_replication_slots = 10\n"
                "max_wal_senders = 10\n"
                "max_prepared_transactions = 10\n"
                "unix_socket_directories = ''\n"
                "fsync = on\n"
                "shared_buffers = 128MB\n"
            )

    def _run(self, program: Path, *args: str) -> None:
        argv = [str(program), *args]
        if _is_root():
            argv = ["runuser", "-u", _RUN_AS, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ComponentFailedError(
                f"{program.name} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            )

    def _server_up(self) -> bool:
        try:
            with psycopg.connect(self._maintenance_dsn(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def _maintenance_dsn(self) -> str:
        return self.settings.model_copy(update={"database": "postgres"}).dsn()

    def _ensure_database(self) -> None:
        with psycopg.connect(self._maintenance_dsn(), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (self.settings.database,)).fetchone()
            if not exists:  # the name is a validated identifier
                conn.execute(f'create database "{self.settings.database}"'.encode())


def _is_root() -> bool:
    return os.geteuid() == 0


def _reachable_by_postgres(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["runuser", "-u", _RUN_AS, "--", "test", "-x", str(folder)], capture_output=True, check=False
    )
    return probe.returncode == 0
