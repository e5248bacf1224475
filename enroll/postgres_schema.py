"""The PostgreSQL gallery's connections and schema migrations.

Migrations are Alembic revisions shipped inside the package (``enroll/migrations/versions/``),
applied when a gallery is opened (``ensure_schema``) or by ``enroll db upgrade``. Why Alembic rather
than hand-run SQL files: it records the applied revision in the database itself
(``alembic_version``), orders revisions by their declared parents rather than by file names, gives
each revision an ``upgrade`` and a ``downgrade``, and is the migration tool operators of
SQLAlchemy-era Python services already know. A versioned-SQL scheme would need all of that
written here. Revision ``000N`` is the counterpart of SQLite schema version N (enroll/schema.py):
0001 the first tables, 0002 held-out faces and job results.

Opening stays cheap: one query compares the database's revision with ``HEAD`` and only a
different one loads Alembic. Replicas started together migrate once: the migration transaction
first takes a PostgreSQL advisory lock (``MIGRATION_LOCK``, in migrations/env.py), so the others
wait, then find the work done. A database at a revision this code does not know (a newer enroll
migrated it) is refused with one line rather than used with the wrong tables.
"""
from __future__ import annotations

import re
from pathlib import Path

from enroll.gallery import GalleryError, Unavailable

HEAD = "0003"  # the newest revision in migrations/versions/ (tests/test_gallery_postgres.py checks it)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x0FACE0001  # advisory lock keys: any fixed numbers no other application uses here
WRITE_LOCK = 0x0FACE0002
CHANNEL = "facenet_gallery"  # NOTIFY channel: payload = the gallery version after the write
URL_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT_S = 10
RECONNECT_EVERY_S = 1.0  # after an outage, pools retry at least this often (psycopg_pool doubles without a cap)


_USER_PASSWORD = re.compile(r"(://[^:/@]*):([^@/]*)@")  # ://user:password@ in a connection URL


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return _USER_PASSWORD.sub(r"\1:***@", url)


def split_password(url: str) -> tuple[str, str | None]:
    """(``url`` without its password, the password percent-decoded or None). A process given the first
    finds the second where libpq looks when a URL has none: $PGPASSWORD or ~/.pgpass."""
    from urllib.parse import unquote

    match = _USER_PASSWORD.search(url)
    if not match:
        return url, None
    return url[:match.start()] + match[1] + "@" + url[match.end():], unquote(match[2])


def check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(URL_SCHEMES):
        raise GalleryError(f"gallery URL {redact(str(url))!r} is not a PostgreSQL URL (postgresql://user@host:port/db)")
    return url


def connection_kwargs() -> dict:
    return {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "facenet-enroll"}


def open_pool(url: str, name: str, max_size: int, wait_s: float):
    """A psycopg connection pool that reconnects within ``RECONNECT_EVERY_S`` of the database coming back.

    psycopg_pool retries a lost connection after 1, 2, 4, 8, ... seconds for up to 5 minutes: after a
    2-minute outage the API would answer 503 for up to 2 minutes more. Here the delay stops growing at
    RECONNECT_EVERY_S and the pool never gives up (a replica outliving its database recovers by itself).
    """
    from psycopg_pool import ConnectionPool
    from psycopg_pool.base import AttemptWithBackoff

    class CappedBackoff(AttemptWithBackoff):
        def update_delay(self, now: float) -> None:
            super().update_delay(now)
            self.delay = min(self.delay, RECONNECT_EVERY_S)

    class ReconnectingPool(ConnectionPool):
        def _add_connection(self, attempt, growing: bool = False) -> None:
            super()._add_connection(attempt or CappedBackoff(timeout=self.reconnect_timeout), growing)

    return ReconnectingPool(url, min_size=1, max_size=max(1, max_size), kwargs=connection_kwargs(),
                            check=ConnectionPool.check_connection, timeout=wait_s,
                            reconnect_timeout=float("inf"), name=name, open=True)


def connect(url: str, autocommit: bool = False):
    """A psycopg connection to ``url``; GalleryError (one line) when it cannot be made."""
    import psycopg

    try:
        return psycopg.connect(check_url(url), autocommit=autocommit, **connection_kwargs())
    except psycopg.Error as exc:
        raise Unavailable(f"cannot connect to the gallery database {redact(url)}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def current_revision(conn) -> str | None:
    """The database's applied revision; None for a database no migration has touched."""
    if conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def ensure_schema(url: str) -> str:
    """Bring the database at ``url`` to ``HEAD`` if it is not there; returns the revision before."""
    with connect(url, autocommit=True) as conn:
        before = current_revision(conn)
    if before != HEAD:
        upgrade(url)
    return before or "none"


def upgrade(url: str, revision: str = "head") -> str:
    """Apply migrations up to ``revision`` (Alembic); returns the database's revision after."""
    import sqlalchemy
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    # SQLAlchemy connects through psycopg with the libpq URL as given (query parameters,
    # unix-socket hosts, PGPASSWORD / .pgpass), not a re-parsed SQLAlchemy URL.
    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: connect(url),
                                      poolclass=sqlalchemy.pool.NullPool)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            config.attributes["lock"] = MIGRATION_LOCK
            command.upgrade(config, revision)
            conn.commit()
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except CommandError as exc:
        raise GalleryError(f"cannot migrate the gallery database {redact(url)} (this enroll knows revisions up "
                           f"to {HEAD}): {first_line(exc)}") from None
    except sqlalchemy.exc.OperationalError as exc:
        raise Unavailable(f"gallery database {redact(url)}: {first_line(exc.orig or exc)}") from None
    finally:
        engine.dispose()
