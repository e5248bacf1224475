"""Closed-set classifiers over the gallery's embeddings: ``enroll identify --method nearest|knn|svm``.

``nearest`` (the default, ``service.identify``) names the person of the nearest enrolled face.
``knn`` (dlib / face_recognition's recipe: k nearest faces, votes weighted by 1/distance) and
``svm`` (OpenFace's: a linear SVM, one-vs-rest, on the embeddings) are scikit-learn classifiers
fitted on the gallery's vectors of the production model version. Either is still open-set: the
answer is "unknown" unless the nearest enrolled face is within τ, the same rule as ``nearest``;
within τ, the classifier decides *who*.

A fitted classifier is kept in memory per (home, method) and refitted when its key changes: the
model version, the gallery's change counter (every add, append and remove bumps it) and the number
of vectors. Nothing is written to the home, so ``remove-person`` has no classifier copy to forget;
a CLI process fits once per call (milliseconds for hundreds of people, see the README's table).
"""
from __future__ import annotations

import warnings

import numpy as np

from enroll.gallery import GalleryError

METHODS = ("nearest", "knn", "svm")
KNN_NEIGHBOURS = 5  # at most; fewer when the gallery has fewer faces
SVM_C = 1.0  # OpenFace's SVC(C=1, kernel="linear")

_CACHE: dict[tuple[str, str], tuple[tuple, "Classifier"]] = {}
_OPENMP = None  # threadpoolctl's controller, made at the first KNN query


def check_method(method: str) -> str:
    if method not in METHODS:
        raise GalleryError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    return method


def check_people(names, method: str) -> None:
    """knn and svm need two classes at least: one enrolled person is no choice to learn."""
    people = len(set(names))
    if people < 2:
        raise GalleryError(f"--method {method} needs at least 2 people enrolled, the gallery has {people}; "
                           "enrol more people or use --method nearest")


class Classifier:
    """A KNN or linear SVM fitted on (L2-normalised) gallery vectors ``matrix`` labelled ``names``."""

    def __init__(self, method: str, names, matrix):
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.svm import LinearSVC

        if method not in ("knn", "svm"):
            raise GalleryError(f"no closed-set classifier {method!r}: use knn or svm")
        check_people(names, method)
        self.method = method
        matrix, labels = np.asarray(matrix, np.float32), np.asarray(list(names), dtype=object)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "more classes than half the samples": one photo a person is normal
            if method == "knn":
                self.model = KNeighborsClassifier(n_neighbors=min(KNN_NEIGHBOURS, len(labels)), weights="distance",
                                                  algorithm="brute").fit(matrix, labels)
            else:
                self.model = LinearSVC(C=SVM_C).fit(matrix, labels)
        self.classes = [str(c) for c in self.model.classes_]

    def scores(self, queries) -> np.ndarray:
        """[n, people] scores in ``self.classes`` order, higher = more likely: KNN's distance-weighted
        vote shares, the SVM's decision values."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if self.method == "knn":
            with _one_openmp_thread():
                return self.model.predict_proba(queries)
        values = self.model.decision_function(queries)
        return np.stack([-values, values], axis=1) if values.ndim == 1 else values  # two people: one margin

    def predict(self, queries) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[np.argmax(self.scores(queries), axis=1)]


def _one_openmp_thread():
    """sklearn's neighbour search runs on OpenMP threads, whose start-up costs ~40 ms on two busy
    cores against ~0.2 ms for the search itself on one thread: identify asks one query at a time."""
    global _OPENMP
    if _OPENMP is None:
        from threadpoolctl import ThreadpoolController

        _OPENMP = ThreadpoolController()
    return _OPENMP.limit(limits=1, user_api="openmp")


def classifier_for(home, version: int, changes: int, method: str, names, matrix) -> Classifier:
    """The fitted ``method`` classifier of this gallery state, refitted when the state changed."""
    key = (int(version), int(changes), len(names))
    slot = (str(home), method)
    cached = _CACHE.get(slot)
    if cached is None or cached[0] != key:
        _CACHE[slot] = cached = (key, Classifier(method, names, matrix))
    return cached[1]


def person_distances(names, matrix, query) -> dict[str, float]:
    """Each enrolled person's distance to ``query``: that of their closest face."""
    dist = np.linalg.norm(np.asarray(matrix, np.float32) - np.asarray(query, np.float32)[None], axis=1)
    best: dict[str, float] = {}
    for name, d in zip(names, dist):
        best[name] = min(best.get(name, np.inf), float(d))
    return best


def answer(classifier: Classifier, names, matrix, query, threshold: float, top_k: int) -> dict:
    """The classifier's answer for one query: its top-``top_k`` people (score, then nearest-face
    distance), ``name`` its first choice when the nearest enrolled face is within τ, else "unknown"."""
    scores = classifier.scores(query)[0]
    distances = person_distances(names, matrix, query)
    ranked = sorted(zip(classifier.classes, scores), key=lambda c: (-c[1], distances[c[0]]))[:top_k]
    nearest = min(distances.values())
    return {"name": ranked[0][0] if nearest <= threshold else "unknown", "distance": nearest,
            "candidates": [{"name": n, "score": float(s), "distance": distances[n], "match": distances[n] <= threshold}
                           for n, s in ranked]}


def identify_closed_set(gallery, home, path, top_k: int, method: str, embedder=None) -> dict:
    """``service.identify`` with ``method`` knn or svm; refused before any photo work when fewer than
    two people are enrolled under the production model."""
    from enroll.model_versions import production_meta
    from enroll.service import _box, query_photo

    version, _ = production_meta(home)
    check_people(gallery.embeddings(version)[0], method)
    query = query_photo(home, path, embedder)
    changes = gallery.gallery_version()
    names, matrix = gallery.embeddings(query.version)
    classifier = classifier_for(home, query.version, changes, method, names, matrix)
    result = answer(classifier, names, matrix, query.embedding, query.meta["threshold"], top_k)
    return {"source": str(path), **result, "threshold": query.meta["threshold"], "model_version": query.version,
            "method": method, "note": query.note, "box": _box(query)}
