"""``InMemoryGallery``: the gallery contract (gallery.py) in plain dicts under one lock.

Same behaviour as ``store.SqliteGallery`` minus durability, for tests and notebooks; the gallery
tests run every case against every implementation so that they cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from enroll.gallery import (CHANGE_KINDS, REMOVED, Change, Closeable, Face, GalleryError, Job, NotFound, Person, check_new_faces,
                            check_presence, crop_sha, held_out_row, validate_name, vector_rows)


class InMemoryGallery(Closeable):
    def __init__(self):
        self._lock = threading.RLock()
        self._people: dict[str, Person] = {}
        self._crops: dict[str, bytes] = {}
        self._vectors: dict[tuple[int, int], np.ndarray] = {}  # (face id, model version) -> vector
        self._changes: list[Change] = []
        self._jobs: dict[int, Job] = {}
        self._next_face = 1

    def add_person(self, name, faces, embeddings, *, append=False, guard=None):
        name = validate_name(name)
        with self._lock:
            dims = {v: len(vec) for (_, v), vec in self._vectors.items()}
            matrices = check_new_faces(faces, embeddings, dims)
            existing = self._people.get(name)
            check_presence(name, existing, append)
            if guard:
                guard()
            now = time.time()
            new_faces, held_out = [], held_out_row(existing, len(faces))
            for row, (png, source) in enumerate(faces):
                face = Face(self._next_face, crop_sha(png), str(source), now, row == held_out)
                self._next_face += 1
                self._crops[face.sha256] = bytes(png)
                for version, matrix in matrices.items():
                    self._vectors[(face.id, version)] = matrix[row].copy()
                new_faces.append(face)
            person = Person(name, existing.created if existing else now, (existing.faces if existing else ()) + tuple(new_faces))
            self._people[name] = person
            self.record_change("append" if existing else "add", name)
            return person

    def remove_person(self, name):
        with self._lock:
            person = self._people.pop(validate_name(name), None)
            if person is None:
                raise NotFound(f"no person named {name!r} is enrolled")
            gone = {f.id for f in person.faces}
            self._vectors = {k: v for k, v in self._vectors.items() if k[0] not in gone}
            still_used = {f.sha256 for p in self._people.values() for f in p.faces}
            for face in person.faces:
                if face.sha256 not in still_used:
                    self._crops.pop(face.sha256, None)
            self._changes = [dataclasses.replace(c, name=REMOVED) if c.name == person.name else c for c in self._changes]
            self.record_change("remove", REMOVED)
            return person

    def get(self, name):
        with self._lock:
            return self._people.get(validate_name(name))

    def list_people(self):
        with self._lock:
            return sorted((p.name, len(p.faces)) for p in self._people.values())

    def embeddings(self, model_version):
        with self._lock:
            rows = [(p.name, self._vectors[(f.id, model_version)]) for p in sorted(self._people.values(), key=lambda p: p.name)
                    for f in p.faces if (f.id, model_version) in self._vectors]
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [n for n, _ in rows], np.stack([v for _, v in rows]).astype(np.float32)

    def embeddings_after(self, model_version, face_id):
        with self._lock:
            rows = sorted((f.id, p.name, self._vectors[(f.id, model_version)]) for p in self._people.values()
                          for f in p.faces if f.id > face_id and (f.id, model_version) in self._vectors)
        return vector_rows([(name, vector.tobytes(), fid) for fid, name, vector in rows], face_id)

    def set_embeddings(self, model_version, vectors):
        with self._lock:
            live = {f.id for p in self._people.values() for f in p.faces}
            stored = 0
            for face_id, vector in vectors.items():
                if face_id in live:  # a face removed meanwhile stays removed
                    self._vectors[(face_id, model_version)] = np.asarray(vector, np.float32)
                    stored += 1
            return stored

    def faces_without(self, model_version):
        with self._lock:
            return [f for p in self._people.values() for f in p.faces if (f.id, model_version) not in self._vectors]

    def crop(self, sha256):
        with self._lock:
            if sha256 not in self._crops:
                raise GalleryError(f"no crop {sha256[:12]}… in the gallery")
            return self._crops[sha256]

    def switch_if_complete(self, model_version, switch):
        with self._lock:
            if self.faces_without(model_version):
                return False
            switch()
            return True

    def record_change(self, kind, name):
        if kind not in CHANGE_KINDS:
            raise GalleryError(f"change kind must be one of {', '.join(CHANGE_KINDS)}, got {kind!r}")
        with self._lock:
            self._changes.append(Change(len(self._changes) + 1, kind, name, time.time()))
            return len(self._changes)

    def changes_since(self, seq):
        with self._lock:
            return [c for c in self._changes if c.seq > seq]

    def gallery_version(self):
        return len(self._changes)

    def add_job(self, kind, params=None, state="requested"):
        with self._lock:
            job = Job(len(self._jobs) + 1, kind, state, dict(params or {}), "", time.time(), time.time())
            self._jobs[job.id] = job
            return job.id

    def update_job(self, job_id, state, detail="", result=None):
        with self._lock:
            if job_id not in self._jobs:
                raise NotFound(f"no job {job_id}")
            old = self._jobs[job_id]
            self._jobs[job_id] = Job(old.id, old.kind, state, old.params, detail, old.created, time.time(),
                                     old.result if result is None else dict(result))

    def jobs(self):
        with self._lock:
            return [self._jobs[k] for k in sorted(self._jobs)]

    def check_consistency(self, model_version=None):
        with self._lock:
            faces = {f.id: f for p in self._people.values() for f in p.faces}
            problems = [f"person {p.name!r} has no faces" for p in self._people.values() if not p.faces]
            problems += [f"face {f.id} has no crop" for f in faces.values() if f.sha256 not in self._crops]
            problems += [f"embedding of missing face {fid}" for fid, _ in self._vectors if fid not in faces]
            with_any = {fid for fid, _ in self._vectors}
            problems += [f"face {fid} has no embedding" for fid in faces if fid not in with_any]
            if model_version is not None:
                problems += [f"face {f.id} has no embedding for model version {model_version}"
                             for f in self.faces_without(model_version)]
            used = {f.sha256 for f in faces.values()}
            problems += [f"orphan crop {sha[:12]}…" for sha in self._crops if sha not in used]
            return problems

    def close(self):
        pass
