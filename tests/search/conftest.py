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


@pytest.fixture(scope="session")
def postgres_server():
    """``(url of the server's 'postgres' database, admin connection string)`` of a private server."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed: pip install -e '.[postgres]'")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the 'postgres' user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server as (apt-get install postgresql)")
        run_as = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="layersearch-pg-"))
    pwfile = root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if owner is not None:
        for path in (root, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", _free_port()
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                    "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}"
    finally:
        subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def _new_db(server: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


@pytest.fixture
def postgres_db(postgres_server) -> str:
    """The URL of a new, empty database for a study (postgresql://user:password@127.0.0.1:port/db)."""
    return _new_db(postgres_server)


@pytest.fixture
def postgres_tracking(postgres_server) -> str:
    """Another new database, for MLflow: Optuna and MLflow both keep an `alembic_version` table."""
    return _new_db(postgres_server)
