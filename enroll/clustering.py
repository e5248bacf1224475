"""Grouping face embeddings by identity without labels: ``enroll cluster`` and experiments/clustering.py.

Pure functions of (L2-normalised) embeddings and τ, the production model's calibrated distance
threshold, so one distance means "same person" for enrolment, identify and clustering alike:

- ``chinese_whispers`` (dlib's face clustering; Biemann 2006): a graph with an edge between every
  two faces closer than τ; each face repeatedly takes the label most common among its neighbours,
  visiting faces in random order. dlib's ``chinese_whispers_clustering`` runs it when dlib is
  installed (the ``[teacher]`` extra); otherwise ``_whispers`` below, the same algorithm with a
  seeded NumPy RNG. Either is deterministic.
- ``agglomerative``: scikit-learn's AgglomerativeClustering, average linkage, cut at distance τ.
- ``dbscan``: scikit-learn's DBSCAN with eps = τ; a face with fewer than ``DBSCAN_MIN_SAMPLES``
  faces within τ (itself included) and no core neighbour is noise, which is returned as a group of
  its own.

Every method returns labels 0..k-1 numbered by group size, largest first (ties: the group whose
first face comes first), so labels are comparable across methods and runs.
"""
from __future__ import annotations

import numpy as np

METHODS = ("chinese_whispers", "agglomerative", "dbscan")
WHISPERS_ITERATIONS = 100  # dlib's default
DBSCAN_MIN_SAMPLES = 3  # a core face has at least two others within τ


class ClusteringError(ValueError):
    """A bad method or threshold; one-line message."""


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ClusteringError(f"clustering method must be one of {', '.join(METHODS)}, got {method!r}")
    return method


def cluster(embeddings, threshold: float, method: str = "chinese_whispers", seed: int = 0) -> np.ndarray:
    """Group labels (int, 0 = the largest group) for each row of ``embeddings`` (n, d)."""
    check_method(method)
    if not (isinstance(threshold, (int, float)) and threshold > 0 and np.isfinite(threshold)):
        raise ClusteringError(f"the clustering threshold must be a positive distance, got {threshold}")
    vectors = np.asarray(embeddings, np.float64)
    if vectors.ndim != 2:
        raise ClusteringError(f"embeddings must be a matrix (n, d), got shape {vectors.shape}")
    if len(vectors) < 2:
        return np.zeros(len(vectors), np.int64)
    if method == "chinese_whispers":
        labels = chinese_whispers(vectors, threshold, seed)
    elif method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, linkage="average",
                                         metric="euclidean").fit_predict(vectors)
    else:
        from sklearn.cluster import DBSCAN

        labels = DBSCAN(eps=threshold, min_samples=DBSCAN_MIN_SAMPLES).fit_predict(vectors)
    return canonical(labels)


def chinese_whispers(vectors: np.ndarray, threshold: float, seed: int = 0) -> np.ndarray:
    """Chinese whispers over the graph of pairs closer than ``threshold``: dlib's when installed."""
    try:
        import dlib
    except ImportError:
        return _whispers(vectors, threshold, seed)
    return np.asarray(dlib.chinese_whispers_clustering([dlib.vector(v.tolist()) for v in vectors], float(threshold)))


def _whispers(vectors: np.ndarray, threshold: float, seed: int = 0,
              iterations: int = WHISPERS_ITERATIONS) -> np.ndarray:
    """dlib's algorithm (unit edge weights, every face starting in its own group) with a seeded RNG."""
    from sklearn.metrics import pairwise_distances

    adjacent = pairwise_distances(vectors) < threshold
    np.fill_diagonal(adjacent, False)
    neighbours = [np.flatnonzero(row) for row in adjacent]
    labels = np.arange(len(vectors))
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = False
        for node in rng.permutation(len(vectors)):
            if not len(neighbours[node]):
                continue
            values, counts = np.unique(labels[neighbours[node]], return_counts=True)
            best = values[np.argmax(counts)]  # ties: the smallest label, as np.unique sorts
            if best != labels[node]:
                labels[node], changed = best, True
        if not changed:
            break
    return labels


def canonical(labels) -> np.ndarray:
    """``labels`` renumbered 0..k-1 by group size (largest first, ties by first member); negative
    labels (DBSCAN's noise) become one group per face."""
    labels = np.asarray(labels, np.int64).copy()
    noise = np.flatnonzero(labels < 0)
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(len(noise))
    groups: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        groups.setdefault(int(label), []).append(row)
    order = sorted(groups.values(), key=lambda rows: (-len(rows), rows[0]))
    out = np.empty(len(labels), np.int64)
    for new, rows in enumerate(order):
        out[rows] = new
    return out


def implementation(method: str) -> str:
    """What runs ``method`` here (reports say it: dlib's and the NumPy whispers may differ on ties)."""
    if method != "chinese_whispers":
        return "scikit-learn"
    try:
        import dlib  # noqa: F401
    except ImportError:
        return "numpy"
    return "dlib"
