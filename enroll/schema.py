"""The gallery database: its tables and how every connection to it is opened.

    people      one row per enrolled person (name unique, NFC)
    faces       one row per accepted photo: its person, crop SHA-256, source file name, and whether it
                is held out (kept out of retraining exports; the promotion gate's probe of the person)
    embeddings  one vector (float32 bytes) per face and model version
    changes     the class-change log (add / append / remove), seq increasing, never reused
    jobs        retraining and other background jobs with their state and result (JSON: the gate's figures)
    api_tokens  the API's bearer tokens (enroll/tokens.py): name, scopes, SHA-256 of the secret, dates (v3)

A database of an older ``SCHEMA_VERSION`` is migrated when first opened (``create_schema``): the
missing tables are created and the columns added since (``ADDED_COLUMNS``) are appended with their
defaults, in the opener's write transaction, so concurrent first opens migrate once.

Every connection runs in WAL mode (readers never block the writer), waits up to
``BUSY_TIMEOUT_S`` for the write lock, syncs fully on commit, and zeroes deleted content
(``secure_delete``) so that removed people do not linger in free pages.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

BUSY_TIMEOUT_S = 60.0
SCHEMA_VERSION = 3
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS faces (id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL REFERENCES people(id),"
    " sha256 TEXT NOT NULL, source TEXT NOT NULL, created REAL NOT NULL, held_out INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id)",
    "CREATE INDEX IF NOT EXISTS faces_sha ON faces(sha256)",
    "CREATE TABLE IF NOT EXISTS embeddings (model_version INTEGER NOT NULL, face_id INTEGER NOT NULL"
    " REFERENCES faces(id), vector BLOB NOT NULL, PRIMARY KEY (model_version, face_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS embeddings_face ON embeddings(face_id)",
    "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
    " name TEXT NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, state TEXT NOT NULL,"
    " params TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL,"
    " result TEXT NOT NULL DEFAULT '{}')",
    "CREATE TABLE IF NOT EXISTS api_tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
    " scopes TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE, created REAL NOT NULL, last_used REAL, revoked REAL)",
]
# Columns added after version 1 (table, column, definition): ALTER TABLE gives an older database them.
ADDED_COLUMNS = [
    ("faces", "held_out", "INTEGER NOT NULL DEFAULT 0"),  # v2: existing faces are not held out
    ("jobs", "result", "TEXT NOT NULL DEFAULT '{}'"),     # v2: existing jobs have no recorded figures
]
# (name, vector) of every face embedded by model version ?, by person then face: the gallery as
# identify and the serving export see it (one query, for the store and the home's read-only reader).
EMBEDDING_ROWS = ("SELECT p.name, e.vector FROM embeddings e JOIN faces f ON f.id = e.face_id "
                  "JOIN people p ON p.id = f.person_id WHERE e.model_version = ? ORDER BY p.name, f.id")
# A version's vectors of the faces after a face id, in id order: what a synced index adds (change_feed.py).
EMBEDDING_ROWS_AFTER = ("SELECT p.name, e.vector, f.id FROM embeddings e JOIN faces f ON f.id = e.face_id "
                        "JOIN people p ON p.id = f.person_id WHERE e.model_version = ? AND f.id > ? ORDER BY f.id")


def connect(path: str | Path) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit ``BEGIN IMMEDIATE``) with the pragmas above."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    # Switching to WAL needs a moment alone with the file: several first opens at once retry.
    _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL").fetchone())
    for pragma in ("synchronous=FULL", "foreign_keys=ON", "secure_delete=ON"):
        db.execute(f"PRAGMA {pragma}")
    return db


def needs_schema(db: sqlite3.Connection) -> bool:
    return db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION


def create_schema(db: sqlite3.Connection) -> None:
    """Create missing tables and columns (migrating an older version); call inside a write
    transaction (idempotent)."""
    for statement in SCHEMA:
        db.execute(statement)
    for table, column, definition in ADDED_COLUMNS:
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _retry_locked(fn, seconds: float = BUSY_TIMEOUT_S):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
