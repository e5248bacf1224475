"""The shared gallery: PostgreSQL (``FACENET_GALLERY_URL=postgresql://…``), crops included.

The same contract and semantics as ``store.SqliteGallery`` (enroll/gallery.py), for several API
replicas on several nodes. Every write is one transaction that first takes one advisory lock
(``WRITE_LOCK``, held until commit), the counterpart of SQLite's ``BEGIN IMMEDIATE``: writers are
serialised across every process and node, so a duplicate-name check cannot go stale before its
insert, change sequence numbers commit in order (``changes_since`` never misses a later commit
with a smaller number), and ``switch_if_complete`` switches with no enrolment in between. Reads
are REPEATABLE READ transactions (one snapshot for several SELECTs) and never wait for writers.

Crops are rows (``crops``: SHA-256 -> PNG bytes), not files: they commit and go with the face rows
that name them, with no journal to recover. Each write that changes people or embeddings ends with
``NOTIFY facenet_gallery, '<gallery version>'``, which PostgreSQL delivers at commit to every
listener (enroll/change_feed.py keeps each replica's search index in step with it).

Deletion removes the person, their faces, embeddings and unshared crops, and their name from the
change log, in one transaction: no query can find them afterwards. PostgreSQL reclaims the dead
row versions at its next (auto)vacuum and recycles its WAL later; backups and replicas keep what
they hold. That physical lag is the server's, outside what enroll controls (see the README).

Connections come from a small psycopg pool that checks each connection before lending it, so a
server restart costs the requests in flight, not the process. An unreachable database is a
one-line ``GalleryError``.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager

import numpy as np

from enroll.gallery import (CHANGE_KINDS, REMOVED, Change, Closeable, Face, GalleryError, Job, NotFound, Person, Unavailable,
                            check_new_faces, check_presence, crop_sha, held_out_row, validate_name, vector_matrix, vector_rows)
from enroll.postgres_schema import (CHANNEL, WRITE_LOCK, check_url, ensure_schema, first_line, open_pool,
                                    redact)
from enroll.schema import BUSY_TIMEOUT_S

FACE_COLUMNS = "id, sha256, source, created, held_out"
# Names sort by code point, as SQLite and Python sort them, whatever the database's collation.
EMBEDDING_ROWS = ("SELECT p.name, e.vector FROM embeddings e JOIN faces f ON f.id = e.face_id "
                  "JOIN people p ON p.id = f.person_id WHERE e.model_version = %s ORDER BY p.name COLLATE \"C\", f.id")
EMBEDDING_ROWS_AFTER = ("SELECT p.name, e.vector, f.id FROM embeddings e JOIN faces f ON f.id = e.face_id "
                        "JOIN people p ON p.id = f.person_id WHERE e.model_version = %s AND f.id > %s ORDER BY f.id")
INSERT_EMBEDDINGS = ("INSERT INTO embeddings (model_version, face_id, vector) SELECT %s, v.face_id, v.vector "
                     "FROM unnest(%s::bigint[], %s::bytea[]) AS v(face_id, vector) "
                     "WHERE EXISTS (SELECT 1 FROM faces f WHERE f.id = v.face_id) "
                     "ON CONFLICT (model_version, face_id) DO UPDATE SET vector = EXCLUDED.vector")


def _face(row) -> Face:
    return Face(int(row[0]), row[1], row[2], row[3], bool(row[4]))


class PostgresGallery(Closeable):
    notify_channel = CHANNEL  # enroll/change_feed.py listens here when a gallery has one

    def __init__(self, url: str, pool_size: int = 4):
        self.url = check_url(url)
        ensure_schema(self.url)  # connects once: an unreachable database fails here, in one line
        self._pool = open_pool(self.url, "facenet-gallery", pool_size, CONNECTION_WAIT_S)

    def __repr__(self) -> str:
        return f"PostgresGallery({redact(self.url)!r})"

    # ------------------------------------------------------------------------- transactions
    @contextmanager
    def _connection(self):
        from psycopg import OperationalError
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                yield conn
        except (OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"gallery database {redact(self.url)} unavailable: {first_line(exc)}") from None

    @contextmanager
    def _write(self, notify: bool = True):
        with self._connection() as conn, conn.transaction():
            # Without parameters, both statements go in one round trip; a writer that waits longer than
            # SQLite's busy timeout gets a one-line error instead of waiting for ever.
            conn.execute(f"SET LOCAL lock_timeout = '{int(WRITE_WAIT_S * 1000)}ms'; "
                         f"SELECT pg_advisory_xact_lock({int(WRITE_LOCK)})")
            yield conn
            if notify:  # delivered at commit, never for a rolled-back write
                conn.execute("SELECT pg_notify(%s, (SELECT COALESCE(MAX(seq), 0) FROM changes)::text)", (CHANNEL,))

    @contextmanager
    def _read(self):
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    # ----------------------------------------------------------------------------- people
    def add_person(self, name, faces, embeddings, *, append=False, guard=None) -> Person:
        name = validate_name(name)
        faces = [(bytes(png), str(source)) for png, source in faces]
        shas = [crop_sha(png) for png, _ in faces]
        with self._write() as db:
            dims = {}
            for version in embeddings:  # only the versions given need a length to match
                row = db.execute("SELECT length(vector) FROM embeddings WHERE model_version = %s LIMIT 1",
                                 (int(version),)).fetchone()
                if row:
                    dims[int(version)] = row[0] // 4
            matrices = check_new_faces(faces, embeddings, dims)
            existing = self._person(db, name)
            check_presence(name, existing, append)
            if guard:
                guard()  # e.g. "is the model these embeddings came from still in production?"
            db.cursor().executemany("INSERT INTO crops (sha256, data) VALUES (%s, %s) ON CONFLICT (sha256) DO NOTHING",
                                    list(zip(shas, (png for png, _ in faces))))
            now = time.time()
            person_id = db.execute("SELECT id FROM people WHERE name = %s", (name,)).fetchone()
            person_id = person_id[0] if person_id else db.execute(
                "INSERT INTO people (name, created) VALUES (%s, %s) RETURNING id", (name, now)).fetchone()[0]
            held_out = held_out_row(existing, len(faces))
            face_ids = [db.execute("INSERT INTO faces (person_id, sha256, source, created, held_out) "
                                   "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                                   (person_id, sha, source, now, row == held_out)).fetchone()[0]
                        for row, ((_, source), sha) in enumerate(zip(faces, shas))]
            for version, matrix in matrices.items():
                db.execute(INSERT_EMBEDDINGS, (version, face_ids, [vector.tobytes() for vector in matrix]))
            self._insert_change(db, "append" if existing else "add", name)
            return self._person(db, name)

    def remove_person(self, name) -> Person:
        name = validate_name(name)
        with self._write() as db:
            person = self._person(db, name)
            if person is None:
                raise NotFound(f"no person named {name!r} is enrolled")
            ids = [f.id for f in person.faces]
            db.execute("DELETE FROM embeddings WHERE face_id = ANY(%s)", (ids,))
            db.execute("DELETE FROM faces WHERE id = ANY(%s)", (ids,))
            db.execute("DELETE FROM crops c WHERE c.sha256 = ANY(%s) AND NOT EXISTS "
                       "(SELECT 1 FROM faces f WHERE f.sha256 = c.sha256)", ([f.sha256 for f in person.faces],))
            db.execute("DELETE FROM people WHERE name = %s", (name,))
            # The change log counts what a retraining must learn; it need not say who.
            db.execute("UPDATE changes SET name = %s WHERE name = %s", (REMOVED, name))
            self._insert_change(db, "remove", REMOVED)
        return person

    def get(self, name) -> Person | None:
        name = validate_name(name)
        with self._read() as db:
            return self._person(db, name)

    @staticmethod
    def _person(db, name: str) -> Person | None:
        row = db.execute("SELECT id, created FROM people WHERE name = %s", (name,)).fetchone()
        if row is None:
            return None
        faces = tuple(_face(r) for r in db.execute(
            f"SELECT {FACE_COLUMNS} FROM faces WHERE person_id = %s ORDER BY id", (row[0],)))
        return Person(name, row[1], faces)

    def list_people(self) -> list[tuple[str, int]]:
        with self._read() as db:
            return [(r[0], int(r[1])) for r in db.execute(
                "SELECT p.name, COUNT(f.id) FROM people p LEFT JOIN faces f ON f.person_id = p.id "
                "GROUP BY p.id ORDER BY p.name COLLATE \"C\"")]

    # ------------------------------------------------------------------------- embeddings
    def embeddings(self, model_version) -> tuple[list[str], np.ndarray]:
        with self._read() as db:
            rows = db.cursor(binary=True).execute(EMBEDDING_ROWS, (int(model_version),)).fetchall()
        return vector_matrix(rows)

    def embeddings_after(self, model_version, face_id) -> tuple[list[str], np.ndarray, int]:
        with self._read() as db:
            rows = db.cursor(binary=True).execute(EMBEDDING_ROWS_AFTER, (int(model_version), int(face_id))).fetchall()
        return vector_rows(rows, face_id)

    def set_embeddings(self, model_version, vectors) -> int:
        ids = [int(fid) for fid in vectors]
        blobs = [np.asarray(v, np.float32).tobytes() for v in vectors.values()]
        with self._write() as db:
            # A face removed while its vector was being computed stays removed.
            return db.execute(INSERT_EMBEDDINGS, (int(model_version), ids, blobs)).rowcount

    def faces_without(self, model_version) -> list[Face]:
        with self._read() as db:
            return [_face(r) for r in db.execute(
                f"SELECT {FACE_COLUMNS} FROM faces f WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                "WHERE e.model_version = %s AND e.face_id = f.id) ORDER BY id", (int(model_version),))]

    def crop(self, sha256) -> bytes:
        with self._read() as db:
            row = db.cursor(binary=True).execute("SELECT data FROM crops WHERE sha256 = %s", (str(sha256),)).fetchone()
        if row is None:
            raise GalleryError(f"no crop {str(sha256)[:12]}… in the gallery (removed meanwhile?)")
        return bytes(row[0])

    def switch_if_complete(self, model_version, switch) -> bool:
        with self._write() as db:
            missing = db.execute("SELECT COUNT(*) FROM faces f WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                                 "WHERE e.model_version = %s AND e.face_id = f.id)", (int(model_version),)).fetchone()[0]
            if missing:
                return False
            switch()  # under the write lock: no enrolment can commit for the old version after this
            return True

    # ----------------------------------------------------------------------- class changes
    def record_change(self, kind, name) -> int:
        with self._write() as db:
            return self._insert_change(db, kind, name)

    @staticmethod
    def _insert_change(db, kind: str, name: str) -> int:
        if kind not in CHANGE_KINDS:
            raise GalleryError(f"change kind must be one of {', '.join(CHANGE_KINDS)}, got {kind!r}")
        return int(db.execute("INSERT INTO changes (kind, name, created) VALUES (%s, %s, %s) RETURNING seq",
                              (kind, name, time.time())).fetchone()[0])

    def changes_since(self, seq) -> list[Change]:
        with self._read() as db:
            return [Change(int(r[0]), r[1], r[2], r[3]) for r in db.execute(
                "SELECT seq, kind, name, created FROM changes WHERE seq > %s ORDER BY seq", (int(seq),))]

    def gallery_version(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])

    # -------------------------------------------------------------------------------- jobs
    def add_job(self, kind, params=None, state="requested") -> int:
        now = time.time()
        with self._write(notify=False) as db:
            return int(db.execute("INSERT INTO jobs (kind, state, params, created, updated) "
                                  "VALUES (%s, %s, %s::jsonb, %s, %s) RETURNING id",
                                  (kind, state, json.dumps(params or {}), now, now)).fetchone()[0])

    def update_job(self, job_id, state, detail="", result=None) -> None:
        """Set a job's state and detail, and its result when given (else the recorded one stays)."""
        encoded = None if result is None else json.dumps(result, default=float)
        with self._write(notify=False) as db:
            if not db.execute("UPDATE jobs SET state = %s, detail = %s, updated = %s, "
                              "result = COALESCE(%s::jsonb, result) WHERE id = %s",
                              (state, detail, time.time(), encoded, int(job_id))).rowcount:
                raise NotFound(f"no job {job_id}")

    def jobs(self) -> list[Job]:
        with self._read() as db:
            return [Job(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in db.execute(
                "SELECT id, kind, state, params, detail, created, updated, result FROM jobs ORDER BY id")]

    # ------------------------------------------------------------------------- consistency
    def check_consistency(self, model_version=None, verify_crops: bool = True) -> list[str]:
        """Every broken invariant, one line each ([] = consistent), under the write lock."""
        from enroll.consistency import postgres_problems

        with self._write(notify=False) as db:
            return postgres_problems(db, model_version, verify_crops)

    def close(self) -> None:
        self._pool.close()


CONNECTION_WAIT_S = 15.0  # how long an operation waits for a pooled connection (the server restarting)
WRITE_WAIT_S = BUSY_TIMEOUT_S  # how long a write waits for the writer lock, as SQLite's writers do
