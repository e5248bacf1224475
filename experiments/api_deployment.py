"""A running deployment of ``enroll serve`` for the load and fault runs (experiments/load_api.py,
tests/test_api_load.py): a fresh production home, its gallery, N API processes and a client token.

    with api_deployment(template_home, backend="postgres", processes=2) as d:
        d.bases                      # ["http://127.0.0.1:<port>", ...], one per API process
        d.token                      # scopes identify and enrol (``enroll token create``'s store)
        d.kill(0); d.restart(0)      # SIGKILL one API process; start it again on the same port
        d.postgres.restart()         # the throw-away PostgreSQL server (None for SQLite or --database-url)
        with d.gallery() as g: ...   # the gallery, as the API processes see it

The home is new and holds only the template's production model (``models/``, ``PRODUCTION``,
``enroll.yaml``), never its gallery: a load run enrols hundreds of made-up people. The gallery is
SQLite in that home (one API process: SQLite allows one writer on one machine) or a PostgreSQL
database: a server started here as the tests start one (tests/postgres_server.py), or the empty
database at ``database_url``. Each API process is ``enroll serve --workers 1`` as a user runs it,
its own uvicorn on its own port with its own model, index and connection pool.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("postgres", "sqlite")
DATABASE = "facenet_load"


class DeploymentError(Exception):
    """The deployment cannot start: no production model, a home that would retrain, no PostgreSQL."""


@dataclass
class Deployment:
    home: Path
    backend: str
    env: dict[str, str]  # what every API process (and this process, to read the gallery) needs
    token: str = ""
    postgres: object | None = None  # tests.postgres_server.PostgresServer when started here
    servers: list = field(default_factory=list)  # tests.api_server.ApiServer, one per process
    ports: list[int] = field(default_factory=list)
    flags: tuple[str, ...] = ()  # more `enroll serve` flags, e.g. ("--max-body-bytes", "1048576")
    ready_timeout: float = 300

    @property
    def bases(self) -> list[str]:
        return [s.base for s in self.servers]

    def start(self, i: int):
        """API process ``i`` on its port (the same port after a restart); ready when it returns."""
        from tests.api_server import ApiServer, free_port

        if i == len(self.ports):  # chosen just before the first start: less time for another program to take it
            self.ports.append(free_port())
        log = self.home.parent / f"api-{i}.log"
        with open(log, "a") as out:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "enroll.cli", "serve", "--home", str(self.home), "--port", str(self.ports[i]),
                 *self.flags],
                cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **self.env}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        server = ApiServer(f"http://127.0.0.1:{self.ports[i]}", process, log)
        if i < len(self.servers):
            self.servers[i] = server
        else:
            self.servers.append(server)
        return server

    def wait_ready(self, *which: int) -> None:
        from tests.api_server import wait_ready

        for i in which or range(len(self.servers)):
            wait_ready(self.servers[i], self.ready_timeout)

    def kill(self, i: int) -> None:
        """SIGKILL API process ``i``: no shutdown, no rollback but the database's own."""
        os.kill(self.servers[i].process.pid, signal.SIGKILL)
        self.servers[i].process.wait()

    def restart(self, i: int) -> None:
        self.start(i)
        self.wait_ready(i)

    @contextmanager
    def gallery(self):
        from enroll.backends import open_gallery

        with open_gallery(self.home, create=True, url=self.env.get("FACENET_GALLERY_URL")) as g:
            yield g

    def stop(self) -> None:
        from tests.api_server import stop

        for server in self.servers:
            stop(server)


def fresh_home(template: Path, root: Path) -> Path:
    """A new home under ``root`` with the template's production model and policy, no gallery."""
    from enroll.gallery import GalleryError
    from enroll.home import models_dir, production_file, settings_file
    from enroll.model_versions import production_meta
    from enroll.settings import load_settings

    try:
        production_meta(template)
        every = load_settings(template).retrain_after_changes
    except GalleryError as exc:
        raise DeploymentError(str(exc)) from None
    if every:  # hundreds of enrolments would submit a real retraining
        raise DeploymentError(f"{settings_file(template)} sets retrain_after_changes: {every}; the load run "
                              "needs a home that retrains on demand only (0)")
    home = root / "home"
    shutil.copytree(models_dir(template), models_dir(home))
    for path in (production_file(template), settings_file(template)):
        if path.exists():
            shutil.copy2(path, home / path.name)
    return home


def _database(backend: str, database_url: str | None, durable: bool):
    """(the PostgreSQL server started here or None, the gallery URL or None)."""
    if backend == "sqlite":
        return None, None
    if database_url:
        return None, database_url
    from tests.postgres_server import PostgresServer, server_binaries

    binaries = server_binaries()
    if binaries is None:
        raise DeploymentError("PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql "
                              "package or pass --database-url")
    server = PostgresServer(binaries, durable=durable)
    server.execute(f"CREATE DATABASE {DATABASE}")
    return server, server.url(DATABASE)


@contextmanager
def api_deployment(template: Path, backend: str = "postgres", processes: int = 1, database_url: str | None = None,
                   durable: bool = True, flags: tuple[str, ...] = (), ready_timeout: float = 300):
    """The running deployment; everything started here is stopped and deleted at the end."""
    if backend not in BACKENDS:
        raise DeploymentError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "sqlite" and processes != 1:
        raise DeploymentError("SQLite allows one writer on one machine: use --api-processes 1 with it")
    root = Path(tempfile.mkdtemp(prefix="facenet-load-api-"))
    postgres = None
    deployment = None
    try:
        home = fresh_home(Path(template), root)
        postgres, url = _database(backend, database_url, durable)
        # Empty for SQLite: a $FACENET_GALLERY_URL of the caller's must not reach the API processes.
        deployment = Deployment(home, backend, {"FACENET_GALLERY_URL": url or ""}, postgres=postgres,
                                flags=tuple(flags),
                                ready_timeout=ready_timeout)
        with deployment.gallery():  # creates or migrates the gallery once, before the processes race to
            pass
        deployment.token = _token(deployment)
        for i in range(processes):
            deployment.start(i)
        deployment.wait_ready()
        yield deployment
    finally:
        if deployment is not None:
            deployment.stop()
        if postgres is not None:
            postgres.close()
        shutil.rmtree(root, ignore_errors=True)


def _token(deployment: Deployment) -> str:
    """A token with the identify and enrol scopes, in the store every API process reads."""
    from enroll.tokens import open_token_store

    saved = os.environ.get("FACENET_GALLERY_URL")
    os.environ.update(deployment.env)
    try:
        with open_token_store(deployment.home) as tokens:
            return tokens.create(("identify", "enrol"), "load run")[1]
    finally:
        os.environ.pop("FACENET_GALLERY_URL")
        if saved is not None:
            os.environ["FACENET_GALLERY_URL"] = saved
