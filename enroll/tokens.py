"""API bearer tokens: who may call ``enroll serve``'s API, and for what (its scopes).

    identify   POST /v1/identify, /v1/verify
    enrol      add and remove people, list them (GET/POST/DELETE /v1/people)
    admin      everything: retraining jobs and tokens, and what the two others allow

A token is 32 random bytes (``fnk_`` + URL-safe base64), shown once when created
(``enroll token create``); the store keeps only its SHA-256. A secret of 256 random bits needs no
slow password hash: nobody can search that space, and a fast hash lets every request be checked
by one indexed lookup. Tokens live in the gallery's own database (SQLite: ``gallery.db``'s
``api_tokens`` table; PostgreSQL with ``FACENET_GALLERY_URL``), so every API replica sees a token
created or revoked anywhere at once.
"""
from __future__ import annotations

import hashlib
import secrets
import time
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from enroll.gallery import Closeable, GalleryError, NotFound

SCOPES = ("identify", "enrol", "admin")
PREFIX = "fnk_"
LAST_USED_EVERY_S = 60.0  # "last used" is refreshed at most this often per token: not a write per request
MAX_TOKEN_NAME = 100


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    scopes: tuple[str, ...]
    created: float
    last_used: float | None = None
    revoked: float | None = None

    def allows(self, scope: str) -> bool:
        return self.revoked is None and (scope in self.scopes or "admin" in self.scopes)

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes), "created": self.created,
                "last_used": self.last_used, "revoked": self.revoked}


class TokenStore(Protocol):
    def create(self, scopes: tuple[str, ...], name: str = "") -> tuple[Token, str]: ...
    def lookup(self, secret: str) -> Token | None: ...
    def tokens(self) -> list[Token]: ...
    def revoke(self, token_id: int) -> Token: ...
    def close(self) -> None: ...


def parse_scopes(text) -> tuple[str, ...]:
    """``"identify,enrol"`` (or a list) -> ("identify", "enrol"), in SCOPES order; GalleryError if unknown."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = {str(s).strip() for s in items if str(s).strip()}
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise GalleryError(f"scopes must be some of {', '.join(SCOPES)} (comma-separated), got {text!r}")
    return tuple(s for s in SCOPES if s in scopes)


def check_token_name(name: str) -> str:
    cleaned = unicodedata.normalize("NFC", str(name)).strip()
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in cleaned):
        raise GalleryError("token name may not contain control characters")
    if len(cleaned) > MAX_TOKEN_NAME:
        raise GalleryError(f"token name is {len(cleaned)} characters long, the limit is {MAX_TOKEN_NAME}")
    return cleaned


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class SqliteTokenStore(Closeable):
    """The ``api_tokens`` table of the home's ``gallery.db`` (enroll/schema.py; its own connection)."""

    COLUMNS = "id, name, scopes, created, last_used, revoked"

    def __init__(self, home):
        import threading
        from pathlib import Path

        from enroll.home import gallery_db
        from enroll.schema import connect, create_schema, needs_schema

        Path(home).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = connect(gallery_db(home))
        if needs_schema(self._db):  # a new or older gallery.db: as SqliteGallery migrates it
            self._db.execute("BEGIN IMMEDIATE")
            try:
                create_schema(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._touched: dict[int, float] = {}

    @staticmethod
    def _token(row) -> Token:
        return Token(int(row[0]), row[1], tuple(row[2].split(",")), row[3], row[4], row[5])

    def create(self, scopes, name: str = "") -> tuple[Token, str]:
        scopes, name, secret = parse_scopes(scopes), check_token_name(name), new_secret()
        with self._lock:
            token_id = self._db.execute("INSERT INTO api_tokens (name, scopes, sha256, created) VALUES (?, ?, ?, ?)",
                                        (name, ",".join(scopes), digest(secret), time.time())).lastrowid
            row = self._db.execute(f"SELECT {self.COLUMNS} FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
        return self._token(row), secret

    def lookup(self, secret: str) -> Token | None:
        """The live token whose secret this is, or None (unknown or revoked)."""
        if not secret.startswith(PREFIX):
            return None
        with self._lock:
            row = self._db.execute(f"SELECT {self.COLUMNS} FROM api_tokens WHERE sha256 = ? AND revoked IS NULL",
                                   (digest(secret),)).fetchone()
            if row is None:
                return None
            now = time.time()
            if now - self._touched.get(row[0], 0.0) >= LAST_USED_EVERY_S:
                self._touched[row[0]] = now
                self._db.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (now, row[0]))
        return self._token(row)

    def tokens(self) -> list[Token]:
        with self._lock:
            return [self._token(r) for r in self._db.execute(f"SELECT {self.COLUMNS} FROM api_tokens ORDER BY id")]

    def revoke(self, token_id: int) -> Token:
        with self._lock:
            self._db.execute("UPDATE api_tokens SET revoked = COALESCE(revoked, ?) WHERE id = ?",
                             (time.time(), int(token_id)))
            row = self._db.execute(f"SELECT {self.COLUMNS} FROM api_tokens WHERE id = ?", (int(token_id),)).fetchone()
        if row is None:
            raise NotFound(f"no token {token_id} (see `enroll token list`)")
        return self._token(row)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_token_store(home) -> TokenStore:
    """The token store beside the gallery: PostgreSQL when $FACENET_GALLERY_URL names one, else SQLite."""
    from enroll.backends import gallery_url

    url = gallery_url()
    if url:
        from enroll.tokens_postgres import PostgresTokenStore

        return PostgresTokenStore(url)
    return SqliteTokenStore(home)
