"""The gallery contract on every implementation (memory, SQLite, PostgreSQL), name rules, deletion without trace, concurrency."""
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from enroll.gallery import MAX_NAME_LENGTH, GalleryError, validate_name
from enroll.schema import SCHEMA_VERSION
from enroll.store import InMemoryGallery, SqliteGallery


def open_backend(kind: str, request, tmp_path):
    if kind == "postgres":
        from enroll.postgres_store import PostgresGallery

        return PostgresGallery(request.getfixturevalue("postgres_url"))
    return InMemoryGallery() if kind == "memory" else SqliteGallery(tmp_path / "home")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def gallery(request, tmp_path):
    """The same contract tests on every backend (postgres: a real server, tests/postgres_server.py)."""
    g = open_backend(request.param, request, tmp_path)
    yield g
    g.close()


def faces(tag: str, n: int = 2):
    return [(f"crop-{tag}-{i}".encode() * 50, f"{tag}-{i}.jpg") for i in range(n)]


def vectors(n: int, dim: int = 8, seed: int = 0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def snapshot(g):
    return g.list_people(), g.gallery_version(), g.embeddings(1)[0], g.check_consistency()


def test_add_get_list_embeddings_roundtrip(gallery):
    a, b = vectors(2, seed=1), vectors(1, seed=2)
    person = gallery.add_person("Zoë Ñandú", faces("z"), {1: a})
    gallery.add_person("李小龙", faces("l", 1), {1: b})
    assert person.name == "Zoë Ñandú" and [f.source for f in person.faces] == ["z-0.jpg", "z-1.jpg"]
    assert gallery.get("Zoë Ñandú") == person and gallery.get("nobody") is None
    assert gallery.list_people() == sorted([("Zoë Ñandú", 2), ("李小龙", 1)])
    names, matrix = gallery.embeddings(1)
    assert sorted(names) == sorted(["Zoë Ñandú", "Zoë Ñandú", "李小龙"])
    np.testing.assert_allclose(matrix[[i for i, n in enumerate(names) if n == "李小龙"]], b)
    none, empty = gallery.embeddings(7)
    assert none == [] and empty.size == 0
    assert gallery.crop(person.faces[0].sha256) == faces("z")[0][0]
    assert gallery.check_consistency(model_version=1) == []


def test_embeddings_after_a_face_id_are_the_newer_faces_in_id_order(gallery):
    """What a synced index reads to extend itself (enroll/change_feed.py)."""
    gallery.add_person("Ada", faces("a"), {1: vectors(2, seed=1)})
    names, matrix, last = gallery.embeddings_after(1, 0)
    assert names == ["Ada", "Ada"] and matrix.shape == (2, 8)
    gallery.add_person("Bob", faces("b", 1), {1: vectors(1, seed=2)})
    gallery.add_person("Ada", faces("c", 1), {1: vectors(1, seed=3)}, append=True)
    newer, rows, newest = gallery.embeddings_after(1, last)
    assert newer == ["Bob", "Ada"] and newest > last
    np.testing.assert_allclose(rows, np.vstack([vectors(1, seed=2), vectors(1, seed=3)]), atol=1e-6)
    none, empty, same = gallery.embeddings_after(1, newest)
    assert none == [] and empty.size == 0 and same == newest
    assert gallery.embeddings_after(2, 0)[0] == []  # another model version has no vectors


def test_duplicate_name_and_append(gallery):
    gallery.add_person("Ada", faces("a", 1), {1: vectors(1)})
    before = snapshot(gallery)
    with pytest.raises(GalleryError, match="already enrolled.*--append"):
        gallery.add_person("Ada", faces("b", 1), {1: vectors(1)})
    with pytest.raises(GalleryError, match="nothing to append"):
        gallery.add_person("Bob", faces("b", 1), {1: vectors(1)}, append=True)
    assert snapshot(gallery) == before
    assert len(gallery.add_person("Ada", faces("c", 2), {1: vectors(2)}, append=True).faces) == 3
    assert [c.kind for c in gallery.changes_since(0)] == ["add", "append"]


def test_rejected_payloads_store_nothing(gallery):
    gallery.add_person("Ada", faces("a", 1), {1: vectors(1, dim=8)})
    before = snapshot(gallery)
    for bad in ({1: vectors(1, dim=5)}, {1: vectors(3)}, {1: np.full((2, 8), np.nan)}, {}):
        with pytest.raises(GalleryError):
            gallery.add_person("Bob", faces("b"), bad)
    with pytest.raises(GalleryError, match="at least one"):
        gallery.add_person("Bob", [], {1: vectors(0)})

    def guard():
        raise GalleryError("model changed")

    with pytest.raises(GalleryError, match="model changed"):
        gallery.add_person("Bob", faces("b"), {1: vectors(2)}, guard=guard)
    assert snapshot(gallery) == before


@pytest.mark.parametrize("name", ["Ada Lovelace", "Zoë", "O'Brien-Smith", "李小龙", "Ólafur Arnalds 🎹", "x" * 100])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name, message", [
    ("", "empty"), ("   \t", "whitespace"), ("a/b", "path separators"), ("a\\b", "path separators"),
    ("..", "only dots"), ("a\x00b", "control"), ("line\nbreak", "control"), ("bell\x07", "control"), ("x" * 101, "limit is 100"),
])
def test_invalid_names_are_refused_in_one_line(name, message, gallery):
    with pytest.raises(GalleryError, match=message) as err:
        gallery.add_person(name, faces("n", 1), {1: vectors(1)})
    assert "\n" not in str(err.value)
    assert gallery.list_people() == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_validate_name_is_idempotent_or_refuses(text):
    try:
        name = validate_name(text)
    except GalleryError as exc:
        assert "\n" not in str(exc)
        return
    assert validate_name(name) == name and 0 < len(name) <= MAX_NAME_LENGTH
    assert "/" not in name and "\\" not in name and "\n" not in name and name == name.strip()


def test_remove_person_and_change_log(gallery):
    gallery.add_person("Ada", faces("a"), {1: vectors(2)})
    gallery.add_person("Bob", faces("b", 1), {1: vectors(1)})
    version = gallery.gallery_version()
    removed = gallery.remove_person("Ada")
    assert len(removed.faces) == 2 and gallery.get("Ada") is None
    assert gallery.embeddings(1)[0] == ["Bob"]
    assert [(c.kind, c.name) for c in gallery.changes_since(version)] == [("remove", "")]
    assert [(c.kind, c.name) for c in gallery.changes_since(0)] == [("add", ""), ("add", "Bob"), ("remove", "")]
    with pytest.raises(GalleryError, match="no person named"):
        gallery.remove_person("Ada")
    with pytest.raises(GalleryError):
        gallery.crop(removed.faces[0].sha256)
    assert gallery.check_consistency(model_version=1) == []


def test_new_model_version_backfill_and_switch(gallery):
    gallery.add_person("Ada", faces("a"), {1: vectors(2)})
    gallery.add_person("Bob", faces("b", 1), {1: vectors(1)})
    assert not gallery.switch_if_complete(2, lambda: pytest.fail("switched with faces missing"))
    missing = gallery.faces_without(2)
    assert len(missing) == 3
    assert gallery.set_embeddings(2, {f.id: np.ones(4) for f in missing[:2]}) == 2
    assert not gallery.switch_if_complete(2, lambda: pytest.fail("switched with a face missing"))
    assert gallery.set_embeddings(2, {missing[2].id: np.ones(4), 10**6: np.ones(4)}) == 1  # unknown id ignored
    switched = []
    assert gallery.switch_if_complete(2, lambda: switched.append(True)) and switched
    assert gallery.embeddings(2)[1].shape == (3, 4) and gallery.check_consistency(model_version=2) == []


def test_jobs_table(gallery):
    job = gallery.add_job("retrain", {"reason": "test"})
    gallery.update_job(job, "running", "epoch 1/3")
    assert [(j.id, j.kind, j.state, j.params, j.detail, j.result) for j in gallery.jobs()] == \
        [(job, "retrain", "running", {"reason": "test"}, "epoch 1/3", {})]
    gallery.update_job(job, "running", "gate passed", result={"gate": {"passed": True, "figures": {"x": 0.5}}})
    gallery.update_job(job, "succeeded", "promoted")  # no result given: the recorded one stays
    (final,) = gallery.jobs()
    assert final.state == "succeeded" and final.result == {"gate": {"passed": True, "figures": {"x": 0.5}}}
    with pytest.raises(GalleryError):
        gallery.update_job(job + 100, "failed")


def test_removed_person_leaves_no_trace_on_disk(tmp_path):
    home = tmp_path / "home"
    g = SqliteGallery(home)
    secret = vectors(2, dim=128, seed=42)
    victim = g.add_person("Victim", [(b"VICTIMCROP-0" * 300, "victim-secret-0.jpg"),
                                     (b"VICTIMCROP-1" * 300, "victim-secret-1.jpg")], {1: secret, 2: secret[::-1]})
    keeper = vectors(1, dim=128, seed=7)
    g.add_person("Keeper", [(b"KEEPERCROP" * 300, "keeper.jpg")], {1: keeper, 2: keeper})
    g.remove_person("Victim")
    g.close()
    blob = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    traces = [v.tobytes()[:64] for v in secret] + [b"VICTIMCROP", b"victim-secret", b"Victim"] + \
        [f.sha256.encode() for f in victim.faces]
    assert [t for t in traces if t in blob] == []
    assert keeper.tobytes()[:64] in blob and b"keeper.jpg" in blob  # the search itself works
    assert not any(home.joinpath("crops").rglob(f"{victim.faces[0].sha256}*"))


def _enrol_worker(home: str, worker: int, barrier, results):
    g = SqliteGallery(home)
    barrier.wait()  # all eight open, then write, at once
    for i in range(3):
        g.add_person(f"worker{worker}-person{i}", faces(f"w{worker}-{i}"), {1: vectors(2, seed=worker * 10 + i)})
    try:
        g.add_person("everyone wants this name", faces(f"shared-{worker}", 1), {1: vectors(1)})
        results.put("won")
    except GalleryError:
        results.put("duplicate")
    g.close()


def test_eight_concurrent_processes_each_person_exactly_once(tmp_path):
    ctx = mp.get_context("spawn")  # TensorFlow may be loaded in this process: never fork it
    barrier, results, home = ctx.Barrier(8), ctx.Queue(), str(tmp_path / "home")
    procs = [ctx.Process(target=_enrol_worker, args=(home, w, barrier, results)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    assert sorted(results.get(timeout=5) for _ in range(8)) == ["duplicate"] * 7 + ["won"]
    g = SqliteGallery(home)
    people = g.list_people()
    expected = {f"worker{w}-person{i}" for w in range(8) for i in range(3)} | {"everyone wants this name"}
    assert len(people) == len(expected) and {n for n, _ in people} == expected
    assert all(k == (1 if n.startswith("everyone") else 2) for n, k in people)
    assert g.check_consistency(model_version=1) == []
    assert len(list(Path(home, "crops").rglob("*.png"))) == 8 * 3 * 2 + 1


def test_export_people_for_retraining(gallery, tmp_path):
    from enroll.retrain import export_people

    gallery.add_person("Zoë", faces("z"), {1: vectors(2)})
    gallery.add_person("Bob", faces("b", 1), {1: vectors(1)})
    gallery.remove_person("Bob")
    version, written = export_people(gallery, tmp_path / "export")
    assert version == 3 and written == {"Zoë": 1}  # her second photo is held out of retraining
    files = sorted((tmp_path / "export").rglob("*.png"))
    assert [p.parent.name for p in files] == ["Zoë"]
    assert {p.read_bytes() for p in files} == {faces("z")[0][0]}


def test_one_photo_is_held_out_once_a_person_has_two(gallery):
    """Enrolment with two or more photos holds the last new one out of retraining (once per person);
    it stays in the gallery, with its embeddings, for identification."""
    assert [f.held_out for f in gallery.add_person("Ada", faces("a", 1), {1: vectors(1)}).faces] == [False]
    ada = gallery.add_person("Ada", faces("b", 1), {1: vectors(1)}, append=True)
    assert [f.held_out for f in ada.faces] == [False, True]  # the new photo, never one trained on before
    ada = gallery.add_person("Ada", faces("c", 2), {1: vectors(2)}, append=True)
    assert [f.held_out for f in ada.faces] == [False, True, False, False]
    bob = gallery.add_person("Bob", faces("d", 3), {1: vectors(3)})
    assert [f.held_out for f in bob.faces] == [False, False, True]
    assert gallery.get("Bob") == bob and len(gallery.embeddings(1)[0]) == 7
    assert [f.held_out for f in gallery.faces_without(2)].count(True) == 2
    assert gallery.check_consistency(model_version=1) == []


def test_a_version_1_gallery_is_migrated(tmp_path):
    """A gallery.db of schema version 1 (no held_out, no job result) opens as version 2: existing
    faces are not held out, existing jobs have no result, and both can be written."""
    import sqlite3

    from enroll.crops import CropFiles
    from enroll.gallery import crop_sha

    home = tmp_path / "home"
    (home / "crops").mkdir(parents=True)
    db = sqlite3.connect(home / "gallery.db")
    png = faces("old", 1)[0][0]
    db.executescript(f"""
        CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
        CREATE TABLE faces (id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL REFERENCES people(id),
            sha256 TEXT NOT NULL, source TEXT NOT NULL, created REAL NOT NULL);
        CREATE TABLE embeddings (model_version INTEGER NOT NULL, face_id INTEGER NOT NULL REFERENCES faces(id),
            vector BLOB NOT NULL, PRIMARY KEY (model_version, face_id)) WITHOUT ROWID;
        CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, name TEXT NOT NULL,
            created REAL NOT NULL);
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, state TEXT NOT NULL,
            params TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL);
        INSERT INTO people VALUES (1, 'Old Timer', 0);
        INSERT INTO faces VALUES (1, 1, '{crop_sha(png)}', 'old.jpg', 0);
        INSERT INTO changes (kind, name, created) VALUES ('add', 'Old Timer', 0);
        INSERT INTO jobs (kind, state, params, detail, created, updated) VALUES ('retrain', 'rejected', '{{}}', 'why', 0, 0);
        PRAGMA user_version = 1;""")
    db.execute("INSERT INTO embeddings VALUES (1, 1, ?)", (vectors(1)[0].tobytes(),))
    db.commit()
    db.close()
    CropFiles(home / "crops").write(png)
    with SqliteGallery(home) as g:
        assert g._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert [f.held_out for f in g.get("Old Timer").faces] == [False]
        assert [(j.state, j.detail, j.result) for j in g.jobs()] == [("rejected", "why", {})]
        g.update_job(1, "rejected", "why", result={"gate": {"passed": False}})
        timer = g.add_person("Old Timer", faces("new", 1), {1: vectors(1)}, append=True)
        assert [f.held_out for f in timer.faces] == [False, True]
        assert g.check_consistency(model_version=1) == []
    with SqliteGallery(home) as g:  # and it opens again as it is
        assert g.jobs()[0].result == {"gate": {"passed": False}} and len(g.get("Old Timer").faces) == 2
