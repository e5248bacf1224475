"""The gallery contract: who is enrolled, their aligned face crops and one embedding per face and
model version, the log of class changes and the jobs table.

Three implementations share this duck type: ``store.SqliteGallery`` (the durable default, one
machine), ``postgres_store.PostgresGallery`` (shared by processes on several nodes) and
``memory.InMemoryGallery`` (tests, notebooks); ``enroll.backends.open_gallery`` chooses between the
first two, and tests/test_gallery.py runs the same contract tests on all three.
Embeddings are kept per model version so that a new production model can be filled in beside the
old one and switched to only once complete (``switch_if_complete``): identify never mixes vectors
of two models.
"""
from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

MAX_NAME_LENGTH = 100
CHANGE_KINDS = ("add", "append", "remove")
REMOVED = ""  # the name a removed person's class changes keep: none


class GalleryError(ValueError):
    """A refused gallery operation; the message is one line and names what to do instead."""


# Kinds of refusal, for callers that answer differently to each (the API's HTTP status codes,
# enroll/api/errors.py); the CLI prints them all alike.
class NotFound(GalleryError):
    """No such person (or job)."""


class Conflict(GalleryError):
    """Refused in the current state: a name already enrolled, a job already ended, a model switched meanwhile."""


class Unavailable(GalleryError):
    """Something the operation needs does not answer now (Ray, an embedding server, the database)."""


@dataclass(frozen=True)
class Face:
    id: int
    sha256: str  # of the PNG crop: the crop's file name under crops/
    source: str  # the photo's file name as given at enrolment
    created: float
    held_out: bool = False  # kept out of retraining exports: the promotion gate's unseen photo of the person


@dataclass(frozen=True)
class Person:
    name: str
    created: float
    faces: tuple[Face, ...]


@dataclass(frozen=True)
class Change:
    seq: int  # increasing; ``changes_since(seq)`` is everything after it
    kind: str  # add | append | remove
    name: str
    created: float


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    state: str
    params: dict = field(default_factory=dict)
    detail: str = ""
    created: float = 0.0
    updated: float = 0.0
    result: dict = field(default_factory=dict)  # what the job measured, e.g. {"gate": {...}} (retrain_job.py)


class Closeable:
    """``with`` support for a store or index: leaving the block calls its ``close``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Gallery(Protocol):
    def add_person(self, name: str, faces: list[tuple[bytes, str]], embeddings: dict[int, np.ndarray], *,
                   append: bool = False, guard: Callable[[], None] | None = None) -> Person: ...
    def remove_person(self, name: str) -> Person: ...
    def get(self, name: str) -> Person | None: ...
    def list_people(self) -> list[tuple[str, int]]: ...
    def embeddings(self, model_version: int) -> tuple[list[str], np.ndarray]: ...
    def embeddings_after(self, model_version: int, face_id: int) -> tuple[list[str], np.ndarray, int]: ...
    def set_embeddings(self, model_version: int, vectors: dict[int, np.ndarray]) -> int: ...
    def faces_without(self, model_version: int) -> list[Face]: ...
    def crop(self, sha256: str) -> bytes: ...
    def switch_if_complete(self, model_version: int, switch: Callable[[], None]) -> bool: ...
    def record_change(self, kind: str, name: str) -> int: ...
    def changes_since(self, seq: int) -> list[Change]: ...
    def gallery_version(self) -> int: ...
    def add_job(self, kind: str, params: dict | None = None, state: str = "requested") -> int: ...
    def update_job(self, job_id: int, state: str, detail: str = "", result: dict | None = None) -> None: ...
    def jobs(self) -> list[Job]: ...
    def check_consistency(self, model_version: int | None = None) -> list[str]: ...
    def close(self) -> None: ...


def validate_name(name: str) -> str:
    """The stored form of a person's name (NFC, outer spaces stripped), or GalleryError saying why not.

    Names end up in one-line CLI output, JSON, change logs and (exported for retraining) folder
    names, so anything that could break a line or pose as a path is refused; any other unicode is
    fine. NFC makes "é" typed either way the
    same person rather than two look-alike entries.
    """
    if not isinstance(name, str):
        raise GalleryError("name must be text")
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise GalleryError("name is empty" if not name else "name is only whitespace")
    if "/" in cleaned or "\\" in cleaned:
        raise GalleryError(f"name may not contain path separators (/ or \\): {cleaned!r}")
    if set(cleaned) == {"."}:  # names become folder names when the gallery is exported for training
        raise GalleryError(f"name may not be only dots: {cleaned!r}")
    bad = [c for c in cleaned if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
    if bad:
        raise GalleryError(f"name may not contain control characters ({', '.join(f'U+{ord(c):04X}' for c in bad[:3])})")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise GalleryError(f"name is {len(cleaned)} characters long, the limit is {MAX_NAME_LENGTH}")
    return cleaned


def check_new_faces(faces, embeddings, expected_dims: dict[int, int]) -> dict[int, np.ndarray]:
    """Validate an ``add_person`` payload before anything is written; returns float32 matrices."""
    if not faces:
        raise GalleryError("no faces given: a person needs at least one accepted photo")
    if not embeddings:
        raise GalleryError("no embeddings given: every face needs one per model version")
    out = {}
    for version, matrix in embeddings.items():
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(faces):
            raise GalleryError(f"model version {version}: expected {len(faces)} embedding rows, got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise GalleryError(f"model version {version}: embeddings contain NaN or infinity")
        if expected_dims.get(version, matrix.shape[1]) != matrix.shape[1]:
            raise GalleryError(f"model version {version} has {expected_dims[version]}-d embeddings, got {matrix.shape[1]}-d")
        out[int(version)] = matrix
    return out


def held_out_row(existing: Person | None, new_faces: int) -> int | None:
    """Which of ``new_faces`` photos being enrolled is held out (its row), or None.

    A person with at least two photos keeps one out of the retraining exports, so that the
    promotion gate can judge a candidate on a photo it never trained on. Only a new photo is held
    out (an earlier one may already be in the production model's training data, which would
    favour it), the last one given, and only while the person has no held-out photo yet.
    """
    if existing is not None and any(face.held_out for face in existing.faces):
        return None
    total = (len(existing.faces) if existing else 0) + new_faces
    return new_faces - 1 if new_faces and total >= 2 else None


def crop_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_presence(name: str, existing: Person | None, append: bool) -> None:
    """Refuse a duplicate enrolment, or an append to nobody, with the fix in the message."""
    if existing and not append:
        raise Conflict(f"{name!r} is already enrolled ({len(existing.faces)} faces); "
                       "use --append to add photos to them, or choose another name")
    if append and not existing:
        raise NotFound(f"no person named {name!r} is enrolled, so there is nothing to append to; drop --append")


def vector_matrix(rows) -> tuple[list[str], np.ndarray]:
    """``embeddings``' answer from (name, float32 vector bytes, ...) rows: the names and the matrix."""
    if not rows:
        return [], np.zeros((0, 0), np.float32)
    matrix = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.float32).reshape(len(rows), -1)
    return [r[0] for r in rows], matrix.copy()


def vector_rows(rows, after: int) -> tuple[list[str], np.ndarray, int]:
    """``embeddings_after``'s answer from (name, vector bytes, face id) rows in face-id order: the
    names, the matrix and the last face id (``after`` when there are no rows)."""
    return (*vector_matrix(rows), int(rows[-1][2]) if rows else int(after))
