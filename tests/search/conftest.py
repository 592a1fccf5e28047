"""A real PostgreSQL server for the search tests, started from Debian's binaries in a temporary folder.

Session-scoped: initdb + pg_ctl on a free 127.0.0.1 port (loopback only), a password user (so redaction
is exercised), stopped at the end. Each test that asks for ``postgres_db`` gets a fresh database. Without
the binaries the tests skip with a reason saying how to get them; .ci/run installs them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

PG_USER = "layersearch"
PG_PASSWORD = "pg-s3cret"  # tests assert it never appears in outputs


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A private PostgreSQL server in a temporary folder; ``stop()`` and ``start()`` make an outage."""

    def __init__(self):
        bin_dir = _pg_bin()
        if bin_dir is None:
            pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): apt-get install postgresql")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pytest.skip("psycopg not installed: pip install -e '.[postgres]'")
        self.run_as: list[str] = []
        owner = None
        if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the 'postgres' user
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and no 'postgres' user to run the server as (apt-get install postgresql)")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="layersearch-pg-"))
        pwfile = self.root / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if owner is not None:
            for path in (self.root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.data, self.port = self.root / "data", _free_port()
        self.url = f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}"
        try:
            subprocess.run([*self.run_as, str(bin_dir / "initdb"), "-D", str(self.data), "-U", PG_USER,
                            f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"],
                           check=True, capture_output=True, timeout=120)
            self.start()
        except BaseException:
            self.destroy()
            raise

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args],
                              capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
        done = self._pg_ctl("-o", options, "-l", str(self.root / "log"), "-w", "-t", "60", "start")
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` disconnects every client (what a restart or failover does to them)."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a private server (``postgresql://user:password@127.0.0.1:port``), shared by the session."""
    server = PgServer()
    try:
        yield server.url
    finally:
        server.destroy()


@pytest.fixture
def own_postgres():
    """A private server of this test's own, for tests that stop and restart it."""
    server = PgServer()
    try:
        yield server
    finally:
        server.destroy()


def new_db(server: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


@pytest.fixture
def postgres_db(postgres_server) -> str:
    """The URL of a new, empty database for a study (postgresql://user:password@127.0.0.1:port/db)."""
    return new_db(postgres_server)


@pytest.fixture
def postgres_tracking(postgres_server) -> str:
    """Another new database, for MLflow: Optuna and MLflow both keep an `alembic_version` table."""
    return new_db(postgres_server)
