"""Enrol, identify and verify: photos -> aligned crops -> production-model embeddings -> gallery.

Every photo goes through ``trainer.align`` exactly as training data did (strict decoding, MTCNN,
5-point alignment at the production model's input size), so gallery vectors, queries and the
calibrated τ all live in the same space. Results are plain dicts: the CLI prints them as text or
JSON, and a server could return them as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enroll.crops import encode_png
from enroll.gallery import GalleryError, check_presence, crop_sha, validate_name
from enroll.index import ExactIndex, normalise, top_people
from enroll.model_versions import StaleModel, embed_pixels, guard_for, production


class EnrolmentRefused(GalleryError):
    """No photo was usable: nothing was stored. ``photos`` says why for each one."""

    def __init__(self, message: str, photos: list[dict]):
        super().__init__(message)
        self.photos = photos


@dataclass
class Photo:
    source: str
    accepted: bool
    reason: str = ""  # why it was rejected, or a note on an accepted one
    crop: np.ndarray | None = None

    def summary(self) -> dict:
        return {"source": self.source, "accepted": self.accepted, "reason": self.reason}


def align_photo(path, image_size: int, allow_several: bool = False) -> Photo:
    from trainer.align import FaceAligner, ImageError, read_image

    try:
        result = FaceAligner(image_size).align(read_image(path))
    except ImageError as exc:
        return Photo(str(path), False, str(exc))
    if result.status == "no_face":
        return Photo(str(path), False, "no face found")
    if result.status == "several_faces" and not allow_several:
        return Photo(str(path), False, f"several faces ({result.faces}); use a photo of one person "
                                       "or --allow-several-faces to keep the largest")
    note = f"several faces ({result.faces}): the largest was kept" if result.status == "several_faces" else ""
    return Photo(str(path), True, note, result.crop)


def add_person(gallery, home, name: str, paths, *, append: bool = False, allow_several: bool = False) -> dict:
    """Enrol ``name`` from photo ``paths``; refused photos are reported, never stored.

    With two or more photos one is held out of retraining (``held_out`` names it in the report):
    it identifies the person like any other, and the promotion gate judges retrained models on it.
    """
    name = validate_name(name)
    check_presence(name, gallery.get(name), append)  # fail before the slow part; re-checked on commit
    for _ in range(3):
        version, meta, model = production(home)
        photos = [align_photo(p, meta["image_size"], allow_several) for p in paths]
        _reject_duplicates(photos, gallery.get(name))
        accepted = [p for p in photos if p.accepted]
        if not accepted:
            reasons = "; ".join(f"{Path(p.source).name}: {p.reason}" for p in photos)
            raise EnrolmentRefused(f"no photo of {name!r} was accepted, nothing stored ({reasons})",
                                   [p.summary() for p in photos])
        vectors = embed_pixels(model, np.stack([p.crop for p in accepted]))
        lookalikes = similar_people(gallery, version, vectors, meta["threshold"], exclude=name)
        # The file name is kept as text: undecodable bytes in it (surrogate escapes) as \udcff.
        faces = [(encode_png(p.crop), Path(p.source).name.encode("utf-8", "backslashreplace").decode("utf-8"))
                 for p in accepted]
        try:
            person = gallery.add_person(name, faces, {version: vectors}, append=append,
                                        guard=guard_for(home, version))
        except StaleModel:
            continue  # a new model was promoted meanwhile: embed again with it
        held_out = next((f.source for f in person.faces if f.held_out), None)
        return {"name": name, "model_version": version, "photos": [p.summary() for p in photos],
                "faces_added": len(accepted), "faces_total": len(person.faces), "held_out": held_out,
                "lookalikes": [{"name": n, "distance": d} for n, d in lookalikes],
                "threshold": meta["threshold"]}
    raise GalleryError("the production model kept changing during the enrolment; try again")


def _reject_duplicates(photos: list[Photo], existing) -> None:
    """The same crop twice (one file given twice, or already enrolled) would only inflate a person."""
    seen = {f.sha256 for f in existing.faces} if existing else set()
    for photo in photos:
        if photo.accepted:
            sha = crop_sha(encode_png(photo.crop))
            if sha in seen:
                photo.accepted, photo.reason, photo.crop = False, "same face crop as a photo already accepted", None
            seen.add(sha)


def similar_people(gallery, version: int, vectors, threshold: float, exclude: str = "") -> list[tuple[str, float]]:
    """Enrolled people whose nearest face is within τ of the mean of ``vectors``, nearest first."""
    names, matrix = gallery.embeddings(version)
    keep = [i for i, n in enumerate(names) if n != exclude]
    if not keep:
        return []
    index = ExactIndex().build(matrix[keep], [names[i] for i in keep])
    mean = normalise(np.mean(vectors, axis=0))
    return [(n, d) for n, d in top_people(index, mean, len(index)) if d <= threshold]


def person_and_query(gallery, home, path, name: str) -> tuple[str, int, dict, np.ndarray, str, np.ndarray]:
    """What verifying ``path`` against ``name`` needs, by either method: (the checked name, the
    production version, its meta, the query's embedding, a note, the person's face embeddings)."""
    name = validate_name(name)
    if gallery.get(name) is None:
        raise GalleryError(f"no person named {name!r} is enrolled (see `enroll list`)")
    version, meta, query, note = _query(home, path)
    names, matrix = gallery.embeddings(version)
    rows = [i for i, n in enumerate(names) if n == name]
    if not rows:  # cannot happen in a consistent gallery (see consistency.py)
        raise GalleryError(f"{name!r} has no embedding for production model {version}; run `enroll status`")
    return name, version, meta, query, note, matrix[rows]


def _query(home, path) -> tuple[int, dict, np.ndarray, str]:
    version, meta, model = production(home)
    photo = align_photo(path, meta["image_size"], allow_several=True)
    if not photo.accepted:
        raise GalleryError(f"{path}: {photo.reason}")
    return version, meta, embed_pixels(model, photo.crop[None])[0], photo.reason


def identify(gallery, home, path, top_k: int = 3, method: str = "nearest") -> dict:
    """The nearest enrolled people to the face in ``path``; ``name`` is "unknown" beyond τ.
    ``method`` knn or svm: a closed-set classifier names the person (enroll.classifiers)."""
    if top_k < 1:
        raise GalleryError(f"--top-k must be at least 1, got {top_k}")
    if method != "nearest":
        from enroll.classifiers import check_method, identify_closed_set

        return identify_closed_set(gallery, home, path, top_k, check_method(method))
    version, meta, query, note = _query(home, path)
    names, matrix = gallery.embeddings(version)
    candidates = top_people(ExactIndex().build(matrix, names), query, top_k) if names else []
    threshold = meta["threshold"]
    best = candidates[0] if candidates else (None, float("inf"))
    return {"source": str(path), "name": best[0] if best[1] <= threshold else "unknown",
            "distance": best[1] if candidates else None, "threshold": threshold, "model_version": version,
            "candidates": [{"name": n, "distance": d, "match": d <= threshold} for n, d in candidates],
            "note": note or ("the gallery is empty" if not names else "")}


def identify_remote(server: str, path, top_k: int = 3) -> dict:
    """``identify`` answered by TF-Serving (or its emulator) at ``server``: the photo is detected and
    aligned here, the embedding and the gallery search happen in the served SavedModel."""
    from serving.client import connect
    from serving.protocol import ServingError

    try:
        client = connect(server)
        meta = client.metadata()
        photo = align_photo(path, int(meta["image_size"]), allow_several=True)
        if not photo.accepted:
            raise GalleryError(f"{path}: {photo.reason}")
        result = client.identify(photo.crop[None].astype(np.float32))
    except ServingError as exc:
        raise GalleryError(f"serving at {server}: {exc}") from None
    names, distances = result.names[0][:top_k], [float(d) for d in result.distances[0][:top_k]]
    threshold = float(meta.get("threshold") or float("inf"))
    return {"source": str(path), "name": "unknown" if result.unknown[0] or not names else names[0],
            "distance": distances[0] if names else None, "threshold": threshold,
            "model_version": meta.get("version"), "server": server,
            "candidates": [{"name": n, "distance": d, "match": d <= threshold} for n, d in zip(names, distances)],
            "note": photo.reason or ("the gallery is empty" if not names else "")}


def verify(gallery, home, path, name: str, method: str = "distance") -> dict:
    """Is the face in ``path`` the enrolled person ``name``? (their closest face within τ; ``method``
    head: the Siamese verification head decides, enroll.verification_head)"""
    if method == "head":
        from enroll.verification_head import verify_head

        return verify_head(gallery, home, path, name)
    if method != "distance":
        raise GalleryError(f"--method must be head or distance, got {method!r}")
    name, version, meta, query, note, faces = person_and_query(gallery, home, path, name)
    distance = float(np.min(np.linalg.norm(faces - query, axis=1)))
    return {"source": str(path), "name": name, "match": distance <= meta["threshold"], "distance": distance,
            "threshold": meta["threshold"], "model_version": version, "note": note}
