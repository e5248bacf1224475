"""What only the PostgreSQL gallery has: migrations, writers in several processes, the change feed
(LISTEN/NOTIFY) and its survival of a server restart, the backend factory and its one-line errors.
The contract itself runs on every backend in tests/test_gallery.py. A real server: tests/postgres_server.py."""
import subprocess
import sys
import time

import numpy as np
import pytest

from enroll.backends import URL_ENV, backend_env, gallery_rows, open_gallery
from enroll.change_feed import SyncedIndex
from enroll.gallery import GalleryError, Unavailable
from enroll.memory import InMemoryGallery
from enroll.store import SqliteGallery
from tests.test_gallery import faces, vectors

pytest.importorskip("psycopg", reason="the PostgreSQL gallery needs psycopg: pip install -e '.[api]'")
from enroll.postgres_schema import HEAD, MIGRATIONS, current_revision, connect, upgrade  # noqa: E402
from enroll.postgres_store import PostgresGallery  # noqa: E402

REPO = MIGRATIONS.parents[1]


def test_head_is_the_newest_shipped_migration():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD]


def test_an_older_schema_is_upgraded_on_open_keeping_its_rows(postgres_server):
    """A database at revision 0001 (no held-out faces, no job results) opens at HEAD: its person
    keeps their face (not held out) and vector, its job gets an empty result, and both can be written."""
    url = postgres_server.new_database(template=None)
    assert upgrade(url, "0001") == "0001"
    png = faces("old", 1)[0][0]
    from enroll.gallery import crop_sha

    with connect(url) as db:
        db.execute("INSERT INTO people (name, created) VALUES ('Old Timer', 0)")
        db.execute("INSERT INTO crops VALUES (%s, %s)", (crop_sha(png), png))
        db.execute("INSERT INTO faces (person_id, sha256, source, created) VALUES (1, %s, 'old.jpg', 0)", (crop_sha(png),))
        db.execute("INSERT INTO embeddings VALUES (1, 1, %s)", (vectors(1)[0].tobytes(),))
        db.execute("INSERT INTO changes (kind, name, created) VALUES ('add', 'Old Timer', 0)")
        db.execute("INSERT INTO jobs (kind, state, params, detail, created, updated) "
                   "VALUES ('retrain', 'rejected', '{}', 'why', 0, 0)")
    with PostgresGallery(url) as g:
        with connect(url) as db:
            assert current_revision(db) == HEAD
        assert [f.held_out for f in g.get("Old Timer").faces] == [False]
        assert [(j.state, j.detail, j.result) for j in g.jobs()] == [("rejected", "why", {})]
        g.update_job(1, "rejected", "why", result={"gate": {"passed": False}})
        timer = g.add_person("Old Timer", faces("new", 1), {1: vectors(1)}, append=True)
        assert [f.held_out for f in timer.faces] == [False, True] and g.gallery_version() == 2
        assert g.check_consistency(model_version=1) == []
    with PostgresGallery(url) as g:  # and it opens again as it is
        assert g.jobs()[0].result == {"gate": {"passed": False}} and len(g.get("Old Timer").faces) == 2


def test_a_database_from_a_newer_enroll_is_refused_in_one_line(postgres_server):
    url = postgres_server.new_database(template=None)
    upgrade(url)
    with connect(url) as db:
        db.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(GalleryError, match="knows revisions up to") as err:
        PostgresGallery(url)
    assert "\n" not in str(err.value)


RACER = """
import sys
import numpy as np
import psycopg
from enroll.gallery import GalleryError
from enroll.postgres_store import PostgresGallery
url, worker = sys.argv[1], int(sys.argv[2])
g = PostgresGallery(url)
with psycopg.connect(url) as gate:  # the start line: the test holds this lock until all wait on it
    gate.execute("SELECT pg_advisory_lock_shared(4242)")
g.add_person(f"worker{worker}", [(f"w{worker}-{i}".encode() * 50, f"{i}.jpg") for i in range(2)],
             {1: np.ones((2, 8), np.float32)})
try:
    g.add_person("everyone wants this name", [(f"shared-{worker}".encode() * 50, "s.jpg")], {1: np.ones((1, 8))})
    print("won")
except GalleryError:
    print("duplicate")
"""


def test_processes_enrolling_one_name_exactly_one_wins(postgres_url):
    with connect(postgres_url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(4242)")
        racers = [subprocess.Popen([sys.executable, "-c", RACER, postgres_url, str(w)], stdout=subprocess.PIPE,
                                   text=True, cwd=REPO) for w in range(4)]
        deadline = time.time() + 120
        while gate.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0] < 4:
            assert time.time() < deadline and all(r.poll() is None for r in racers), "racers did not reach the start"
            time.sleep(0.05)
        gate.execute("SELECT pg_advisory_unlock(4242)")  # all four go at once
    outcomes = [r.communicate(timeout=120)[0].strip() for r in racers]
    assert [r.returncode for r in racers] == [0] * 4
    assert sorted(outcomes) == ["duplicate"] * 3 + ["won"]
    with PostgresGallery(postgres_url) as g:
        assert dict(g.list_people()) == {**{f"worker{w}": 2 for w in range(4)}, "everyone wants this name": 1}
        assert [c.seq for c in g.changes_since(0)] == [1, 2, 3, 4, 5]  # committed in sequence order
        assert g.check_consistency(model_version=1) == []


WRITER = """
import sys, time
import numpy as np
from enroll.postgres_store import PostgresGallery
g = PostgresGallery(sys.argv[1])
for line in sys.stdin:
    verb, name = line.split(maxsplit=1)
    name = name.strip()
    if verb == "add":
        g.add_person(name, [(name.encode() * 40, "a.jpg")], {1: np.ones((1, 8), np.float32)})
    else:
        g.remove_person(name)
    print(time.time(), flush=True)
"""


def _seen_within(synced, writer, line: str, visible, limit: float = 5.0) -> float:
    """Send one change to the writer process; seconds from its commit until ``visible(snapshot)``."""
    writer.stdin.write(line + "\n")
    writer.stdin.flush()
    deadline = time.time() + limit
    while not visible(synced.current(1)):
        assert time.time() < deadline, f"{line!r} not seen within {limit} s"
        time.sleep(0.002)
    seen = time.time()
    return seen - float(writer.stdout.readline())


def test_a_change_in_another_process_reaches_the_synced_index_within_a_second(postgres_url, postgres_server):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, postgres_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    gallery = PostgresGallery(postgres_url)
    synced = SyncedIndex(gallery, lambda: 1)
    try:
        assert len(synced.current()) == 0
        assert synced.listener.listening.wait(10)
        lags = []
        for i in range(5):
            lags.append(_seen_within(synced, writer, f"add person {i}", lambda s, i=i: f"person {i}" in s.index.names))
        lags.append(_seen_within(synced, writer, "remove person 0", lambda s: "person 0" not in s.index.names))
        rebuilds = synced.rebuilds
        for _ in range(50):  # no change: searches answer from the snapshot, without asking the database
            synced.search(vectors(1), 3)
        assert synced.rebuilds == rebuilds
        assert max(lags) < 1.0, lags
        print(f"change feed lag: median {np.median(lags) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms")

        postgres_server.restart()  # the listener reconnects; the pool replaces its dead connections
        assert _seen_within(synced, writer, "add after restart", lambda s: "after restart" in s.index.names,
                            limit=15) < 15
        assert ("after restart", 1) in gallery.list_people()
        assert synced.listener.listening.wait(10)
        assert _seen_within(synced, writer, "add listening again", lambda s: "listening again" in s.index.names) < 1.0
    finally:
        writer.stdin.close()
        writer.wait(30)
        synced.close()
        gallery.close()


def _until(synced, ready, limit: float = 5.0):
    """The synced index's snapshot once ``ready(snapshot)`` (PostgreSQL's notification is asynchronous)."""
    deadline = time.time() + limit
    while not ready(snapshot := synced.current()):
        assert time.time() < deadline, "the synced index did not catch up"
        time.sleep(0.005)
    return snapshot


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_enrolments_extend_the_synced_index_and_a_removal_rebuilds_it(kind, request, tmp_path):
    from enroll.index import ExactIndex
    from tests.test_gallery import open_backend

    gallery = open_backend(kind, request, tmp_path)
    with gallery, SyncedIndex(gallery, lambda: 1) as synced:
        assert len(synced.current()) == 0 and synced.rebuilds == 1
        if synced.listener:
            assert synced.listener.listening.wait(10)
        gallery.add_person("Ada", faces("a"), {1: vectors(2, seed=1)})
        _until(synced, lambda s: len(s) == 2)
        for i in range(3):
            gallery.add_person(f"P{i}", faces(f"p{i}", 1), {1: vectors(1, seed=10 + i)})
        gallery.add_person("Ada", faces("c", 1), {1: vectors(1, seed=20)}, append=True)
        grown = _until(synced, lambda s: len(s) == 6)
        assert grown.updated and synced.rebuilds == 2 and synced.updates >= 1  # built empty, then with Ada
        names, matrix = gallery.embeddings(1)
        whole, queries = ExactIndex().build(matrix, names), vectors(4, seed=30)
        assert sorted(grown.index.names) == sorted(names)
        np.testing.assert_allclose(grown.search(queries, 3)[0], whole.search(queries, 3)[0], atol=1e-6)
        gallery.remove_person("P0")
        after = _until(synced, lambda s: "P0" not in s.index.names)
        assert not after.updated and synced.rebuilds == 3 and len(after) == 5


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_without_notifications_the_index_asks_the_gallery_version_before_a_search(kind, tmp_path):
    writer = SqliteGallery(tmp_path) if kind == "sqlite" else InMemoryGallery()
    reader = SqliteGallery(tmp_path) if kind == "sqlite" else writer  # another connection to the same file
    with SyncedIndex(reader, lambda: 1) as synced:
        assert synced.listener is None and len(synced.current()) == 0
        writer.add_person("Ada", faces("a"), {1: vectors(2)})
        snapshot = synced.current()
        assert list(snapshot.index.names) == ["Ada", "Ada"] and snapshot.gallery_version == 1
        assert synced.current() is snapshot  # unchanged: no rebuild
        assert synced.current(2) is not snapshot and len(synced.current(2)) == 0  # another model version
        writer.remove_person("Ada")
        assert len(synced.current(1)) == 0
        names = synced.current(1).top_people(vectors(1)[0], 3)
        assert names == []


def test_the_synced_index_can_be_faiss(tmp_path):
    faiss_index = pytest.importorskip("faiss", reason="FAISS search needs faiss-cpu: pip install -e '.[index]'")
    from enroll.index import FaissIndex

    assert faiss_index
    gallery = InMemoryGallery()
    with SyncedIndex(gallery, lambda: 1, build_index=lambda m, n: FaissIndex("hnsw").build(m, n)) as synced:
        assert len(synced.current()) == 0  # an empty gallery needs no FAISS index
        gallery.add_person("Ada", faces("a"), {1: vectors(2, seed=1)})
        gallery.add_person("Bob", faces("b", 1), {1: vectors(1, seed=2)})
        snapshot = synced.current()
        assert isinstance(snapshot.index, FaissIndex) and len(snapshot) == 3
        assert snapshot.top_people(vectors(1, seed=2)[0], 1)[0][0] == "Bob"


def test_the_factory_chooses_by_url_and_refuses_bad_ones_in_one_line(tmp_path, monkeypatch, postgres_url):
    monkeypatch.delenv(URL_ENV, raising=False)
    assert isinstance(open_gallery(tmp_path / "new"), InMemoryGallery)  # read-only on no gallery: create nothing
    assert not (tmp_path / "new").exists()
    with open_gallery(tmp_path / "home", create=True) as g:
        assert isinstance(g, SqliteGallery) and backend_env() == {}
    monkeypatch.setenv(URL_ENV, postgres_url)
    with open_gallery(tmp_path / "other") as g:
        assert isinstance(g, PostgresGallery)
        g.add_person("Ada", faces("a"), {1: vectors(2)})
    assert backend_env() == {URL_ENV: postgres_url} and not (tmp_path / "other").exists()
    names, matrix = gallery_rows(tmp_path / "other", 1)  # what an export serves, from the database
    assert names == ["Ada", "Ada"] and matrix.shape == (2, 8)
    for url, kind, message in [("mysql://x@localhost/db", GalleryError, "not a PostgreSQL URL"),
                               ("postgresql://nobody:secret@127.0.0.1:1/none", Unavailable, "cannot connect")]:
        started = time.time()
        with pytest.raises(kind, match=message) as err:
            open_gallery(tmp_path, url=url)
        assert "\n" not in str(err.value) and "secret" not in str(err.value) and time.time() - started < 15


def test_after_a_long_outage_the_pools_reconnect_within_a_second_or_two(postgres_url, postgres_server):
    """psycopg_pool alone retries after 1, 2, 4, 8 s...: 9 s down would leave the API answering 503 for
    up to 6 s more after the database came back. Our pools (postgres_schema.open_pool) cap the wait."""
    from enroll.postgres_schema import RECONNECT_EVERY_S
    from enroll.tokens import PREFIX
    from enroll.tokens_postgres import PostgresTokenStore

    gallery, tokens = PostgresGallery(postgres_url), PostgresTokenStore(postgres_url)
    try:
        gallery.list_people()
        postgres_server.stop()
        down = time.monotonic()
        while time.monotonic() - down < 9:  # requests during the outage keep the pools retrying
            with pytest.raises(Unavailable):
                tokens.lookup(PREFIX + "x" * 40)
            time.sleep(0.5)
        postgres_server.start()
        up = time.monotonic()
        gallery.list_people()
        tokens.lookup(PREFIX + "x" * 40)
        assert RECONNECT_EVERY_S <= 1.0 and time.monotonic() - up < 3.0, time.monotonic() - up
    finally:
        tokens.close()
        gallery.close()


def test_ray_jobs_get_the_gallery_url_without_its_password(monkeypatch):
    """A Ray job's environment is on the dashboard: it carries the URL without the password, which the
    job's processes find in $PGPASSWORD (set for a Ray head enroll starts; from the Secret in k8s)."""
    from enroll.backends import head_env
    from tests.postgres_server import PostgresServer, skip_without_postgres

    secret = "s3cr/t@:x%"
    server = PostgresServer(skip_without_postgres(), password=secret)
    try:
        url = server.url()
        monkeypatch.delenv("PGPASSWORD", raising=False)
        monkeypatch.setenv("PGPASSFILE", "/nonexistent")
        job_env = backend_env(url)
        assert job_env == {URL_ENV: f"postgresql://postgres@127.0.0.1:{server.port}/postgres"}
        with pytest.raises(Unavailable, match="password"):
            connect(job_env[URL_ENV]).close()
        connect(url).close()  # the full URL works as it is
        assert head_env(url) == {"PGPASSWORD": secret}
        monkeypatch.setenv("PGPASSWORD", head_env(url)["PGPASSWORD"])
        connect(job_env[URL_ENV]).close()  # what the job does: URL from its spec, password from the node
        assert head_env(url) == {}  # an operator's own PGPASSWORD is left alone
    finally:
        server.close()
