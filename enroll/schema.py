"""The gallery database: its tables and how every connection to it is opened.

    people      one row per enrolled person (name unique, NFC)
    faces       one row per accepted photo: its person, crop SHA-256, source file name
    embeddings  one vector (float32 bytes) per face and model version
    changes     the class-change log (add / append / remove), seq increasing, never reused
    jobs        retraining and other background jobs with their state

Every connection runs in WAL mode (readers never block the writer), waits up to
``BUSY_TIMEOUT_S`` for the write lock, syncs fully on commit, and zeroes deleted content
(``secure_delete``) so that removed people do not linger in free pages.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

BUSY_TIMEOUT_S = 60.0
SCHEMA_VERSION = 1
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS faces (id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL REFERENCES people(id),"
    " sha256 TEXT NOT NULL, source TEXT NOT NULL, created REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id)",
    "CREATE INDEX IF NOT EXISTS faces_sha ON faces(sha256)",
    "CREATE TABLE IF NOT EXISTS embeddings (model_version INTEGER NOT NULL, face_id INTEGER NOT NULL"
    " REFERENCES faces(id), vector BLOB NOT NULL, PRIMARY KEY (model_version, face_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS embeddings_face ON embeddings(face_id)",
    "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
    " name TEXT NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, state TEXT NOT NULL,"
    " params TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
]


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
    """Create missing tables; call inside a write transaction (idempotent)."""
    for statement in SCHEMA:
        db.execute(statement)


def _retry_locked(fn, seconds: float = BUSY_TIMEOUT_S):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
