"""The API's tokens in the PostgreSQL gallery database (``FACENET_GALLERY_URL``): the ``api_tokens``
table of migration 0003, the same contract as tokens.SqliteTokenStore, for every API replica."""
from __future__ import annotations

import threading
import time

from enroll.gallery import Closeable, NotFound, Unavailable
from enroll.postgres_schema import check_url, ensure_schema, first_line, open_pool, redact
from enroll.tokens import LAST_USED_EVERY_S, PREFIX, Token, check_token_name, digest, new_secret, parse_scopes

TOKEN_WAIT_S = 10.0  # how long a request waits for a connection to check its token
COLUMNS = "id, name, scopes, created, last_used, revoked"


def _token(row) -> Token:
    return Token(int(row[0]), row[1], tuple(row[2].split(",")), row[3], row[4], row[5])


class PostgresTokenStore(Closeable):
    def __init__(self, url: str):
        self.url = check_url(url)
        ensure_schema(self.url)  # an unreachable database fails here, in one line
        self._pool = open_pool(self.url, "facenet-tokens", 2, TOKEN_WAIT_S)
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def _run(self, sql: str, params=(), fetch: bool = True):
        from psycopg import OperationalError
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn, conn.transaction():
                rows = conn.execute(sql, params)
                return rows.fetchall() if fetch else None
        except (OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"token store {redact(self.url)}: {first_line(exc)}") from None

    def create(self, scopes, name: str = "") -> tuple[Token, str]:
        scopes, name, secret = parse_scopes(scopes), check_token_name(name), new_secret()
        (row,) = self._run(f"INSERT INTO api_tokens (name, scopes, sha256, created) VALUES (%s, %s, %s, %s) "
                           f"RETURNING {COLUMNS}", (name, ",".join(scopes), digest(secret), time.time()))
        return _token(row), secret

    def lookup(self, secret: str) -> Token | None:
        if not secret.startswith(PREFIX):
            return None
        rows = self._run(f"SELECT {COLUMNS} FROM api_tokens WHERE sha256 = %s AND revoked IS NULL", (digest(secret),))
        if not rows:
            return None
        token, now = _token(rows[0]), time.time()
        with self._lock:
            due = now - self._touched.get(token.id, 0.0) >= LAST_USED_EVERY_S
            if due:
                self._touched[token.id] = now
        if due:
            self._run("UPDATE api_tokens SET last_used = %s WHERE id = %s", (now, token.id), fetch=False)
        return token

    def tokens(self) -> list[Token]:
        return [_token(r) for r in self._run(f"SELECT {COLUMNS} FROM api_tokens ORDER BY id")]

    def revoke(self, token_id: int) -> Token:
        rows = self._run(f"UPDATE api_tokens SET revoked = COALESCE(revoked, %s) WHERE id = %s RETURNING {COLUMNS}",
                         (time.time(), int(token_id)))
        if not rows:
            raise NotFound(f"no token {token_id} (see `enroll token list`)")
        return _token(rows[0])

    def close(self) -> None:
        self._pool.close()
