"""A real, throwaway PostgreSQL server for the tests: initdb in a temp dir, a free port on 127.0.0.1.

Debian's `postgresql` package provides the binaries (.ci/run installs it when missing). initdb refuses to
run as root, so as root the cluster belongs to the `postgres` user and every server command runs through
`runuser -u postgres --`; as anyone else it runs as that user. Trust authentication on 127.0.0.1 only:
the server lives as long as the test session and holds nothing but test data.

`stop()` / `start()` take the server away and bring it back on the same port and data directory, for
the tests of a database lost during operation.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

START_TIMEOUT_S = 60
SUPERUSER = "postgres"
INSTALL_HINT = (
    "PostgreSQL server binaries not found (looked at `pg_config --bindir` and /usr/lib/postgresql/*/bin); "
    "install Debian's `postgresql` package (`apt-get install postgresql`, as .ci/run does) or put "
    "initdb/pg_ctl on PATH"
)


class PostgresUnavailable(RuntimeError):
    """The binaries are missing or the server did not start; the message says what to do."""


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl (the newest installed major version)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out:
            candidates.append(Path(out))
    # Debian keeps the server binaries out of PATH, one directory per major version.
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _major(p.parent.name), reverse=True)
    candidates += versions
    for on_path in (shutil.which("initdb"),):
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable(INSTALL_HINT)


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temp dir. `url(db)` gives SQLAlchemy URLs; `create_database()` fresh ones."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="faceid-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)
        self.running = False
        if self._as_postgres:
            try:
                shutil.chown(self.root, SUPERUSER, SUPERUSER)
            except LookupError:
                raise PostgresUnavailable(
                    f"running as root, but there is no `{SUPERUSER}` user to own the test cluster "
                    "(Debian's postgresql package creates it)"
                ) from None
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--locale=C")

    # ------------------------------------------------------------------------------- life cycle
    def start(self) -> None:
        """Start (or restart after stop) on the same port; returns once it accepts connections."""
        # fsync off: these tests stop the server, never the machine; a stopped or killed server still
        # recovers everything committed from its WAL (in the OS cache).
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                   "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", str(START_TIMEOUT_S), "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" disconnects clients and shuts down cleanly, "immediate" is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def close(self) -> None:
        if self.running:
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -------------------------------------------------------------------------------- databases
    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "faceid") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{next(self._names)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        """A plain psycopg connection in autocommit mode (for checks that bypass faceid's code)."""
        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True)

    # ---------------------------------------------------------------------------------- helpers
    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, check=False)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.is_file() else ""
            raise PostgresUnavailable(f"{tool} {' '.join(args[:3])} failed ({done.returncode}): "
                                      f"{done.stderr.strip()[-2000:]}\n{log}")
