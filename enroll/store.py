"""The durable gallery: SQLite at ``$FACENET_HOME/gallery.db`` plus content-addressed crop files.

Several ``enroll`` processes may run at once. SQLite in WAL mode lets readers (identify) proceed
while one writer holds the lock; every write is one ``BEGIN IMMEDIATE`` transaction, which takes
the write lock up front (waiting up to ``BUSY_TIMEOUT_S``), so two enrolments never interleave and
a duplicate-name check cannot go stale before its insert. A person, their faces, their embeddings
and the class-change record commit together or not at all; crops are written under the same lock
before the commit and journalled so a killed writer's crops are removed (see crops.py).

Deletion leaves no trace: ``secure_delete`` zeroes freed rows and a WAL checkpoint with truncate
drops the old page images, so a removed person's embeddings and crop hashes are gone from disk;
their entries in the class-change log lose the name. (Copies outside the gallery: enroll/forget.py.)
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from enroll.crops import CropFiles
from enroll.gallery import (CHANGE_KINDS, REMOVED, Change, Closeable, Face, GalleryError, Job, NotFound, Person, check_new_faces,
                            check_presence, crop_sha, held_out_row, validate_name, vector_matrix, vector_rows)
from enroll.memory import InMemoryGallery
from enroll.home import crops_dir, gallery_db
from enroll.schema import EMBEDDING_ROWS, EMBEDDING_ROWS_AFTER, connect, create_schema, needs_schema

__all__ = ["SqliteGallery", "InMemoryGallery", "GalleryError"]


def _face(row) -> Face:
    return Face(row[0], row[1], row[2], row[3], bool(row[4]))


class SqliteGallery(Closeable):
    def __init__(self, home: str | Path):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.crops = CropFiles(crops_dir(self.home))
        self._lock = threading.RLock()
        self._db = connect(gallery_db(self.home))
        if needs_schema(self._db):
            with self._write() as db:
                create_schema(db)
        # A writer that died mid-enrolment left journalled crops no row names; readers never see
        # them, and the next write (or check_consistency) deletes them: opening for identify must
        # not wait behind enrolments for that.

    # ------------------------------------------------------------------------- transactions
    @contextmanager
    def _write(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self.crops.resolve_pending(self._referenced)
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self):
        with self._lock:
            self._db.execute("BEGIN")  # one snapshot for several SELECTs
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def _referenced(self, shas: set[str]) -> set[str]:
        found, ordered = set(), sorted(shas)
        for i in range(0, len(ordered), 500):
            chunk = ordered[i:i + 500]
            found |= {r[0] for r in self._db.execute(
                f"SELECT DISTINCT sha256 FROM faces WHERE sha256 IN ({','.join('?' * len(chunk))})", chunk)}
        return found

    # ----------------------------------------------------------------------------- people
    def add_person(self, name, faces, embeddings, *, append=False, guard=None) -> Person:
        name = validate_name(name)
        faces = [(bytes(png), str(source)) for png, source in faces]
        shas = [crop_sha(png) for png, _ in faces]
        with self._write() as db:
            dims = {v: n // 4 for v, n in db.execute(
                "SELECT model_version, MAX(length(vector)) FROM embeddings GROUP BY model_version")}
            matrices = check_new_faces(faces, embeddings, dims)
            existing = self._person(db, name)
            check_presence(name, existing, append)
            if guard:
                guard()  # e.g. "is the model these embeddings came from still in production?"
            journal = self.crops.begin(shas)
            for png, _ in faces:
                self.crops.write(png)
            now = time.time()
            person_id = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            person_id = person_id[0] if person_id else \
                db.execute("INSERT INTO people (name, created) VALUES (?, ?)", (name, now)).lastrowid
            held_out = held_out_row(existing, len(faces))
            for row, ((_, source), sha) in enumerate(zip(faces, shas)):
                face_id = db.execute("INSERT INTO faces (person_id, sha256, source, created, held_out) "
                                     "VALUES (?, ?, ?, ?, ?)", (person_id, sha, source, now, int(row == held_out))).lastrowid
                db.executemany("INSERT INTO embeddings VALUES (?, ?, ?)",
                               [(v, face_id, m[row].tobytes()) for v, m in matrices.items()])
            self._insert_change(db, "append" if existing else "add", name)
        self.crops.end(journal)
        return self.get(name)

    def remove_person(self, name) -> Person:
        name = validate_name(name)
        with self._write() as db:
            person = self._person(db, name)
            if person is None:
                raise NotFound(f"no person named {name!r} is enrolled")
            self.crops.begin(f.sha256 for f in person.faces)
            ids = [(f.id,) for f in person.faces]
            db.executemany("DELETE FROM embeddings WHERE face_id = ?", ids)
            db.executemany("DELETE FROM faces WHERE id = ?", ids)
            db.execute("DELETE FROM people WHERE name = ?", (name,))
            # The change log counts what a retraining must learn; it need not say who.
            db.execute("UPDATE changes SET name = ? WHERE name = ?", (REMOVED, name))
            self._insert_change(db, "remove", REMOVED)
        with self._write():
            pass  # resolving the journal deletes the crops no other face shares
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # old page images out of the WAL
        return person

    def get(self, name) -> Person | None:
        name = validate_name(name)
        with self._read() as db:
            return self._person(db, name)

    def _person(self, db, name: str) -> Person | None:
        row = db.execute("SELECT id, created FROM people WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        faces = tuple(_face(r) for r in db.execute(
            "SELECT id, sha256, source, created, held_out FROM faces WHERE person_id = ? ORDER BY id", (row[0],)))
        return Person(name, row[1], faces)

    def list_people(self) -> list[tuple[str, int]]:
        with self._read() as db:
            return [tuple(r) for r in db.execute(
                "SELECT p.name, COUNT(f.id) FROM people p LEFT JOIN faces f ON f.person_id = p.id "
                "GROUP BY p.id ORDER BY p.name")]

    # ------------------------------------------------------------------------- embeddings
    def embeddings(self, model_version) -> tuple[list[str], np.ndarray]:
        with self._read() as db:
            rows = db.execute(EMBEDDING_ROWS, (int(model_version),)).fetchall()
        return vector_matrix(rows)

    def embeddings_after(self, model_version, face_id) -> tuple[list[str], np.ndarray, int]:
        with self._read() as db:
            rows = db.execute(EMBEDDING_ROWS_AFTER, (int(model_version), int(face_id))).fetchall()
        return vector_rows(rows, face_id)

    def set_embeddings(self, model_version, vectors) -> int:
        rows = [(int(model_version), int(fid), np.asarray(v, np.float32).tobytes(), int(fid))
                for fid, v in vectors.items()]
        with self._write() as db:
            before = db.total_changes
            # A face removed while its vector was being computed stays removed.
            db.executemany("INSERT OR REPLACE INTO embeddings SELECT ?, ?, ? WHERE EXISTS "
                           "(SELECT 1 FROM faces WHERE id = ?)", rows)
            return db.total_changes - before

    def faces_without(self, model_version) -> list[Face]:
        with self._read() as db:
            return [_face(r) for r in db.execute(
                "SELECT id, sha256, source, created, held_out FROM faces f WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                "WHERE e.model_version = ? AND e.face_id = f.id) ORDER BY id", (int(model_version),))]

    def crop(self, sha256) -> bytes:
        try:
            return self.crops.read(sha256)
        except FileNotFoundError:
            raise GalleryError(f"no crop {sha256[:12]}… in the gallery (removed meanwhile?)") from None

    def switch_if_complete(self, model_version, switch) -> bool:
        with self._write() as db:
            missing = db.execute("SELECT COUNT(*) FROM faces f WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                                 "WHERE e.model_version = ? AND e.face_id = f.id)", (int(model_version),)).fetchone()[0]
            if missing:
                return False
            switch()  # under the write lock: no enrolment can commit for the old version after this
            return True

    # ----------------------------------------------------------------------- class changes
    def record_change(self, kind, name) -> int:
        with self._write() as db:
            return self._insert_change(db, kind, name)

    def _insert_change(self, db, kind: str, name: str) -> int:
        if kind not in CHANGE_KINDS:
            raise GalleryError(f"change kind must be one of {', '.join(CHANGE_KINDS)}, got {kind!r}")
        return db.execute("INSERT INTO changes (kind, name, created) VALUES (?, ?, ?)",
                          (kind, name, time.time())).lastrowid

    def changes_since(self, seq) -> list[Change]:
        with self._read() as db:
            return [Change(*r) for r in db.execute(
                "SELECT seq, kind, name, created FROM changes WHERE seq > ? ORDER BY seq", (int(seq),))]

    def gallery_version(self) -> int:
        with self._read() as db:
            return db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]

    # -------------------------------------------------------------------------------- jobs
    def add_job(self, kind, params=None, state="requested") -> int:
        now = time.time()
        with self._write() as db:
            return db.execute("INSERT INTO jobs (kind, state, params, created, updated) VALUES (?, ?, ?, ?, ?)",
                              (kind, state, json.dumps(params or {}), now, now)).lastrowid

    def update_job(self, job_id, state, detail="", result=None) -> None:
        """Set a job's state and detail, and its result when given (else the recorded one stays)."""
        encoded = None if result is None else json.dumps(result, default=float)
        with self._write() as db:
            if not db.execute("UPDATE jobs SET state = ?, detail = ?, updated = ?, result = COALESCE(?, result) "
                              "WHERE id = ?", (state, detail, time.time(), encoded, int(job_id))).rowcount:
                raise NotFound(f"no job {job_id}")

    def jobs(self) -> list[Job]:
        with self._read() as db:
            return [Job(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], json.loads(r[7])) for r in db.execute(
                "SELECT id, kind, state, params, detail, created, updated, result FROM jobs ORDER BY id")]

    # ------------------------------------------------------------------------- consistency
    def check_consistency(self, model_version=None, verify_crops: bool = True) -> list[str]:
        """Every broken invariant, one line each ([] = consistent); under the write lock, so a
        concurrent writer cannot show up as a half person."""
        from enroll.consistency import sqlite_problems

        with self._write() as db:
            return sqlite_problems(db, self.crops, model_version, verify_crops)

    def close(self) -> None:
        with self._lock:
            self._db.close()
