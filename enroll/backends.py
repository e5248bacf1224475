"""The one place that chooses the gallery backend.

    FACENET_GALLERY_URL unset           SQLite in $FACENET_HOME/gallery.db, crops under crops/ (one machine)
    FACENET_GALLERY_URL=postgresql://…  PostgreSQL, crops included (several processes on several nodes)

Everything that opens the gallery for real use (the CLI, retraining jobs, promotions, the serving
export, the API) calls ``open_gallery``; an explicit ``url`` overrides the environment. The home
still holds the models, ``PRODUCTION`` and exports with either backend: only the gallery moves.
Retraining jobs run elsewhere (Ray), so ``backend_env`` is what they must inherit to open the same
gallery: the URL without its password, since a Ray job's environment is shown to anyone who can see
the dashboard. The job's processes take the password from $PGPASSWORD (or ~/.pgpass) on the Ray
nodes, as libpq does for a URL without one: ``head_env`` sets it for a Ray head that enroll starts
itself, and the Kubernetes Ray Pods get it from the gallery's Secret (k8s/training/raycluster.yaml).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from enroll.gallery import GalleryError

URL_ENV = "FACENET_GALLERY_URL"


def gallery_url(url: str | None = None) -> str | None:
    """``url``, else $FACENET_GALLERY_URL, else None (SQLite); GalleryError for a non-PostgreSQL URL."""
    url = url if url is not None else os.environ.get(URL_ENV, "")
    url = url.strip()
    if not url:
        return None
    from enroll.postgres_schema import check_url

    return check_url(url)


def backend_name(url: str | None = None) -> str:
    return "postgresql" if gallery_url(url) else "sqlite"


def open_gallery(home, create: bool = False, url: str | None = None, pool_size: int = 4):
    """The gallery of ``home`` (or of the PostgreSQL database at ``url`` / $FACENET_GALLERY_URL).

    SQLite: without ``create``, a home whose gallery.db does not exist yet gets an empty in-memory
    stand-in, so that read-only commands (`enroll list --home typo/`) create nothing. PostgreSQL:
    the database must exist; its tables are created or migrated on open, and ``pool_size``
    connections at most are kept (one per concurrent request a process should serve at once).
    """
    url = gallery_url(url)
    if url:
        try:
            from enroll.postgres_store import PostgresGallery
        except ImportError as exc:
            raise GalleryError(f"{URL_ENV} needs the PostgreSQL client ({exc.name} is missing): "
                               "pip install -e '.[api]'") from None
        return PostgresGallery(url, pool_size=pool_size)
    from enroll.home import gallery_db
    from enroll.memory import InMemoryGallery
    from enroll.store import SqliteGallery

    if create or gallery_db(home).exists():
        return SqliteGallery(home)
    return InMemoryGallery()


def backend_env(url: str | None = None) -> dict[str, str]:
    """Environment variables a Ray job for this home needs to reach its gallery, its password left out."""
    from enroll.postgres_schema import split_password

    url = gallery_url(url)
    return {URL_ENV: split_password(url)[0]} if url else {}


def head_env(url: str | None = None) -> dict[str, str]:
    """What a Ray head that enroll starts for retraining adds to its environment: the gallery's
    password as $PGPASSWORD (unless one is set), which its jobs then inherit outside the job spec."""
    from enroll.postgres_schema import split_password

    url = gallery_url(url)
    password = split_password(url)[1] if url else None
    return {"PGPASSWORD": password} if password is not None and "PGPASSWORD" not in os.environ else {}


def gallery_rows(home, version: int, notes: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(names, vectors) of model ``version`` as an export serves them, from whichever backend; for
    SQLite read-only (enroll/home.py), so an export never creates a database nor blocks a writer."""
    from enroll import home as layout

    url = gallery_url()
    if not url:
        return layout.gallery_rows(home, version, notes)
    with open_gallery(Path(home), url=url) as gallery:
        names, matrix = gallery.embeddings(version)
    if not names and notes is not None:
        from enroll.postgres_schema import redact

        notes.append(f"no embeddings for model version {version} in {redact(url)}")
    return names, matrix


def upgrade_schema(home, url: str | None = None) -> dict:
    """``enroll db upgrade``: migrate the gallery's schema to this code's version; says from and to."""
    url = gallery_url(url)
    if url:
        from enroll.postgres_schema import HEAD, ensure_schema, redact

        before = ensure_schema(url)
        return {"backend": "postgresql", "database": redact(url), "before": before, "after": HEAD}
    import sqlite3
    from contextlib import closing

    from enroll.home import gallery_db
    from enroll.schema import SCHEMA_VERSION
    from enroll.store import SqliteGallery

    path = gallery_db(home)
    before = 0
    if path.exists():
        with closing(sqlite3.connect(path)) as db:
            before = db.execute("PRAGMA user_version").fetchone()[0]
    SqliteGallery(home).close()  # opening migrates (enroll/schema.py)
    return {"backend": "sqlite", "database": str(path), "before": str(before or "none"), "after": str(SCHEMA_VERSION)}
