"""A real PostgreSQL server for the tests: initdb into a temporary directory, ``pg_ctl start`` on a
free local port (its unix socket in the same directory), stopped and deleted at the end.

Debian's server binaries (``/usr/lib/postgresql/<major>/bin``, installed in CI by
``.ci/install-postgres.sh``) or any ``initdb``/``pg_ctl`` on PATH are used; without them the tests
that need a server skip, saying so. PostgreSQL refuses to run as root, so as root the data
directory is handed to the ``postgres`` user and the server runs as that user (``runuser``).

The server is tuned for tests (no fsync, trust authentication on 127.0.0.1 only): it holds nothing
worth keeping. ``postgres_url`` is the session's migrated gallery database, emptied before each
test (TRUNCATE, ~60 ms; creating a database per test costs ~1 s); ``new_database()`` makes another
one, empty of tables with ``template=None`` (to test migrations from scratch).
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

GALLERY = "facenet_gallery"  # the migrated database postgres_url empties for each test


def server_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl (the newest Debian major first), or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return Path(candidate)
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throw-away server; ``url`` is its default database's connection URL."""

    def __init__(self, binaries: Path, durable: bool = False, password: str | None = None):
        self.bin, self.durable = binaries, durable  # durable: fsync on, as a real server (experiments)
        self.password = password  # None: trust; else the postgres user's, checked by scram-sha-256
        self.root = Path(tempfile.mkdtemp(prefix="facenet-pg-"))  # not pytest's tmp: postgres must reach it
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            ids = pwd.getpwnam("postgres")
            os.chown(self.root, ids.pw_uid, ids.pw_gid)
        auth = ["--auth=trust"]
        if password is not None:
            (self.root / "pwfile").write_text(password + "\n")
            if self.as_postgres:
                os.chown(self.root / "pwfile", ids.pw_uid, ids.pw_gid)
            auth = ["--auth=scram-sha-256", f"--pwfile={self.root / 'pwfile'}"]
        self._run("initdb", "-D", self.data, "-U", "postgres", *auth, "-E", "UTF8", "--no-sync",
                  "--locale=C.UTF-8")
        self.start()

    def _run(self, tool: str, *args, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *map(str, args)]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def url(self, database: str = "postgres") -> str:
        from urllib.parse import quote

        user = "postgres" if self.password is None else f"postgres:{quote(self.password, safe='')}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        done = self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60", "start",
                         check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {self.log.read_text()[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """Stop (closing every client connection) and start again on the same port."""
        self.stop()
        self.start()

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self, template: str | None = None) -> str:
        """A new database (a copy of ``template``, else with no tables); its URL."""
        name = f"gallery_{uuid.uuid4().hex[:12]}"
        self.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.url(name)

    def empty(self, database: str = GALLERY) -> None:
        """Delete every row of every table but the migration record, restarting the id sequences."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute("SET lock_timeout = '20s'")  # a connection left in a transaction: fail, do not hang
            tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                                 "AND tablename <> 'alembic_version'")]
            if tables:
                conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def skip_without_postgres() -> Path:
    """The server binaries' directory; the calling test skips, saying why, when a server cannot run here."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql "
                    "package (.ci/install-postgres.sh) to run the PostgreSQL gallery tests")
    pytest.importorskip("psycopg", reason="the PostgreSQL gallery needs psycopg: pip install -e '.[api]'")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no `postgres` user to run the PostgreSQL server as")
    return binaries


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server, with the migrated gallery database ready."""
    server = PostgresServer(skip_without_postgres())
    try:
        server.execute(f"CREATE DATABASE {GALLERY}")
        from enroll.postgres_store import PostgresGallery

        PostgresGallery(server.url(GALLERY)).close()  # applies the migrations once, for every test
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The session server's migrated gallery database, empty."""
    postgres_server.empty()
    return postgres_server.url(GALLERY)
