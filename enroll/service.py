"""Enrol, identify and verify: photos -> aligned crops -> production-model embeddings -> gallery.

Every photo goes through ``trainer.align`` exactly as training data did (strict decoding, MTCNN,
5-point alignment at the production model's input size), so gallery vectors, queries and the
calibrated τ all live in the same space. A photo is a file path (the CLI) or ``PhotoBytes`` (an
upload to the API: decoded from memory, named by its file name). Embeddings come from an
``embedders`` Embedder: the in-process production model unless one is given. Results are plain
dicts: the CLI prints them as text or JSON, and the API (enroll/api/) returns them as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enroll.crops import encode_png
from enroll.embedders import Embedder, LocalEmbedder
from enroll.gallery import Conflict, GalleryError, NotFound, check_presence, crop_sha, validate_name
from enroll.home import face_template
from enroll.index import ExactIndex, normalise, top_people
from enroll.model_versions import StaleModel, guard_for
from trainer.align import DEFAULT_TEMPLATE


class PhotoRefused(GalleryError):
    """The photo cannot be used (not an image, no face, ...); the message names the photo."""


class EnrolmentRefused(PhotoRefused):
    """No photo was usable: nothing was stored. ``photos`` says why for each one."""

    def __init__(self, message: str, photos: list[dict]):
        super().__init__(message)
        self.photos = photos


@dataclass(frozen=True)
class PhotoBytes:
    """An uploaded photo: its bytes and the file name it came with (no directory part)."""
    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


@dataclass
class Photo:
    source: str
    accepted: bool
    reason: str = ""  # why it was rejected, or a note on an accepted one
    crop: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, width, height of the face kept, in the photo's pixels

    def summary(self) -> dict:
        return {"source": self.source, "accepted": self.accepted, "reason": self.reason}


def align_photo(path, image_size: int, allow_several: bool = False, template: str = DEFAULT_TEMPLATE) -> Photo:
    """``path``'s face aligned as the model of ``image_size`` px in ``template``'s framing expects
    (``enroll.home.face_template`` of its meta)."""
    from trainer.align import FaceAligner, ImageError, read_image

    try:
        image = read_image(path.data if isinstance(path, PhotoBytes) else path)
        result = FaceAligner(image_size, template=template).align(image)
    except ImageError as exc:
        return Photo(str(path), False, str(exc))
    if result.status == "no_face":
        return Photo(str(path), False, "no face found")
    if result.status == "several_faces" and not allow_several:
        return Photo(str(path), False, f"several faces ({result.faces}); use a photo of one person "
                                       "or --allow-several-faces to keep the largest")
    note = f"several faces ({result.faces}): the largest was kept" if result.status == "several_faces" else ""
    return Photo(str(path), True, note, result.crop, _box_in_photo(result, image.shape))


def _box_in_photo(result, shape) -> tuple[int, int, int, int] | None:
    """The detector's box in the photo's pixels (a small photo is detected on a padded, upscaled view)."""
    from enroll.faces import box_in_image

    if result.box is None or result.view is None:
        return None
    return box_in_image(result.box, shape, result.view.shape)


def add_person(gallery, home, name: str, paths, *, append: bool = False, allow_several: bool = False,
               embedder: Embedder | None = None) -> dict:
    """Enrol ``name`` from photo ``paths``; refused photos are reported, never stored.

    With two or more photos one is held out of retraining (``held_out`` names it in the report):
    it identifies the person like any other, and the promotion gate judges retrained models on it.
    """
    name = validate_name(name)
    check_presence(name, gallery.get(name), append)  # fail before the slow part; re-checked on commit
    embedder = embedder or LocalEmbedder()
    for _ in range(3):
        model = embedder.current(home)
        version, meta = model.version, model.meta
        photos = [align_photo(p, meta["image_size"], allow_several, face_template(meta)) for p in paths]
        _reject_duplicates(photos, gallery.get(name))
        accepted = [p for p in photos if p.accepted]
        if not accepted:
            reasons = "; ".join(f"{Path(p.source).name}: {p.reason}" for p in photos)
            raise EnrolmentRefused(f"no photo of {name!r} was accepted, nothing stored ({reasons})",
                                   [p.summary() for p in photos])
        vectors = model.embed(np.stack([p.crop for p in accepted]))
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
    raise Conflict("the production model kept changing during the enrolment; try again")


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


@dataclass(frozen=True)
class Query:
    """A query photo embedded by the production model."""
    version: int  # the production model version
    meta: dict  # its meta.json
    embedding: np.ndarray  # (d,)
    note: str  # e.g. "several faces: the largest was kept"
    box: tuple[int, int, int, int] | None  # where the face is in the photo: x, y, width, height


def query_photo(home, path, embedder: Embedder | None = None) -> Query:
    """Align and embed the face in ``path`` (the largest, if several); PhotoRefused when there is none."""
    model = (embedder or LocalEmbedder()).current(home)
    photo = align_photo(path, model.meta["image_size"], allow_several=True, template=face_template(model.meta))
    if not photo.accepted:
        raise PhotoRefused(f"{path}: {photo.reason}")
    return Query(model.version, model.meta, model.embed(photo.crop[None])[0], photo.reason, photo.box)


def person_and_query(gallery, home, path, name: str, embedder: Embedder | None = None
                     ) -> tuple[str, Query, np.ndarray]:
    """What verifying ``path`` against ``name`` needs, by either method: (the checked name, the
    query, the person's face embeddings under the query's model version)."""
    name = validate_name(name)
    if gallery.get(name) is None:
        raise NotFound(f"no person named {name!r} is enrolled (see `enroll list`)")
    query = query_photo(home, path, embedder)
    names, matrix = gallery.embeddings(query.version)
    rows = [i for i, n in enumerate(names) if n == name]
    if not rows:  # removed meanwhile; a consistent gallery has a vector per face and model (consistency.py)
        raise NotFound(f"{name!r} has no embedding for production model {query.version}; run `enroll status`")
    return name, query, matrix[rows]


def search_index(gallery, version: int):
    """The nearest-face index of the gallery under model ``version``: the gallery's own when it keeps
    one in step with its changes (the API's, enroll/api/live_index.py), else built now."""
    own = getattr(gallery, "search_index", None)
    if own is not None:
        return own(version)
    names, matrix = gallery.embeddings(version)
    return ExactIndex().build(matrix, names)


def identify(gallery, home, path, top_k: int = 3, method: str = "nearest", embedder: Embedder | None = None) -> dict:
    """The nearest enrolled people to the face in ``path``; ``name`` is "unknown" beyond τ.
    ``method`` knn or svm: a closed-set classifier names the person (enroll.classifiers)."""
    if top_k < 1:
        raise GalleryError(f"--top-k must be at least 1, got {top_k}")
    if method != "nearest":
        from enroll.classifiers import check_method, identify_closed_set

        return identify_closed_set(gallery, home, path, top_k, check_method(method), embedder)
    query = query_photo(home, path, embedder)
    index = search_index(gallery, query.version)
    threshold = query.meta["threshold"]
    return {"source": str(path), **nearest_answer(index, query.embedding, threshold, top_k), "threshold": threshold,
            "model_version": query.version,
            "note": query.note or ("the gallery is empty" if not len(index) else ""), "box": _box(query)}


def nearest_answer(index, embedding, threshold: float, top_k: int) -> dict:
    """The ``top_k`` nearest enrolled people to one embedding (a photo's, or a video track's mean):
    ``name`` the nearest when within τ, else "unknown"; ``distance`` None when the gallery is empty."""
    candidates = top_people(index, embedding, top_k) if len(index) else []
    best = candidates[0] if candidates else (None, float("inf"))
    return {"name": best[0] if best[1] <= threshold else "unknown", "distance": best[1] if candidates else None,
            "candidates": [{"name": n, "distance": d, "match": d <= threshold} for n, d in candidates]}


def _box(query: Query) -> dict | None:
    return dict(zip(("x", "y", "width", "height"), query.box)) if query.box else None


def identify_remote(server: str, path, top_k: int = 3) -> dict:
    """``identify`` answered by TF-Serving (or its emulator) at ``server``: the photo is detected and
    aligned here, the embedding and the gallery search happen in the served SavedModel."""
    from serving.client import connect
    from serving.protocol import ServingError

    try:
        client = connect(server)
        meta = client.metadata()
        photo = align_photo(path, int(meta["image_size"]), allow_several=True, template=face_template(meta))
        if not photo.accepted:
            raise PhotoRefused(f"{path}: {photo.reason}")
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


def verify(gallery, home, path, name: str, method: str = "distance", embedder: Embedder | None = None) -> dict:
    """Is the face in ``path`` the enrolled person ``name``? (their closest face within τ; ``method``
    head: the Siamese verification head decides, enroll.verification_head)"""
    if method == "head":
        from enroll.verification_head import verify_head

        return verify_head(gallery, home, path, name, embedder)
    if method != "distance":
        raise GalleryError(f"--method must be head or distance, got {method!r}")
    name, query, faces = person_and_query(gallery, home, path, name, embedder)
    distance = float(np.min(np.linalg.norm(faces - query.embedding, axis=1)))
    threshold = query.meta["threshold"]
    return {"source": str(path), "name": name, "match": distance <= threshold, "distance": distance,
            "threshold": threshold, "model_version": query.version, "note": query.note, "box": _box(query)}
