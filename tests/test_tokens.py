"""The API's token store (enroll/tokens.py), the same contract on SQLite (the home's gallery.db) and
PostgreSQL (a real server, tests/postgres_server.py): secrets shown once and kept only as SHA-256,
scopes, revocation, "last used" written at most once a minute."""
import hashlib

import pytest

from enroll.gallery import GalleryError, NotFound
from enroll.tokens import PREFIX, SqliteTokenStore, Token, open_token_store, parse_scopes


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, monkeypatch):
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("FACENET_GALLERY_URL", url)
    else:
        monkeypatch.delenv("FACENET_GALLERY_URL", raising=False)
    with open_token_store(tmp_path / "home") as tokens:
        yield request.param, tokens


def test_create_lookup_list_revoke(store):
    kind, tokens = store
    token, secret = tokens.create("enrol,identify", "front desk")
    assert secret.startswith(PREFIX) and len(secret) > 40
    assert token.scopes == ("identify", "enrol") and token.name == "front desk" and token.revoked is None
    found = tokens.lookup(secret)
    assert found.id == token.id and found.allows("identify") and found.allows("enrol") and not found.allows("admin")
    assert tokens.lookup(secret + "x") is None and tokens.lookup("not-even-prefixed") is None
    admin, admin_secret = tokens.create(["admin"])
    assert tokens.lookup(admin_secret).allows("enrol"), "admin holds every scope"
    assert [t.id for t in tokens.tokens()] == [token.id, admin.id]
    assert tokens.tokens()[0].last_used is not None, "the lookup recorded its use"
    revoked = tokens.revoke(token.id)
    assert revoked.revoked is not None and not revoked.allows("identify")
    assert tokens.lookup(secret) is None and tokens.lookup(admin_secret) is not None
    assert tokens.revoke(token.id).revoked == revoked.revoked, "revoking twice keeps the first date"
    with pytest.raises(NotFound, match="no token 999"):
        tokens.revoke(999)


def test_only_the_hash_is_stored(tmp_path, monkeypatch):
    monkeypatch.delenv("FACENET_GALLERY_URL", raising=False)
    with SqliteTokenStore(tmp_path) as tokens:
        _, secret = tokens.create("identify")
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("gallery.db*"))
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored


def test_last_used_is_written_at_most_once_a_minute(store, monkeypatch):
    import enroll.tokens as module

    _, tokens = store
    token, secret = tokens.create("identify")
    clock = [1000.0]
    monkeypatch.setattr(module.time, "time", lambda: clock[0])
    tokens.lookup(secret)
    clock[0] += 30
    tokens.lookup(secret)
    first = next(t for t in tokens.tokens() if t.id == token.id).last_used
    clock[0] += 31
    tokens.lookup(secret)
    assert next(t for t in tokens.tokens() if t.id == token.id).last_used > first


@pytest.mark.parametrize("scopes, message", [("", "scopes must be"), ("root", "scopes must be"),
                                             ("identify,,root", "scopes must be")])
def test_bad_scopes_are_refused(scopes, message):
    with pytest.raises(GalleryError, match=message):
        parse_scopes(scopes)


def test_bad_names_are_refused(store):
    _, tokens = store
    for name, message in (("a\nb", "control characters"), ("x" * 101, "limit is 100")):
        with pytest.raises(GalleryError, match=message):
            tokens.create("identify", name)
    assert tokens.tokens() == []


def test_a_revoked_token_allows_nothing():
    token = Token(1, "", ("admin",), 0.0, revoked=1.0)
    assert not any(token.allows(s) for s in ("identify", "enrol", "admin"))
