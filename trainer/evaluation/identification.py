"""Closed- and open-set identification against an enrolled gallery (nearest neighbour, L2).

Closed set: every probe's identity is enrolled; the probe is labelled with its nearest gallery
embedding's identity. Open set (the enrolment service's real situation): some probes show people
who are not enrolled and must be rejected; a probe is *accepted* when its nearest gallery
distance is ``<= threshold`` (the same convention as ``lfw_protocol``) and is then labelled with
that neighbour's identity, otherwise it is answered "unknown".
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

_CHUNK = 1024  # probe rows per distance block: bounds memory at 1024 x len(gallery) floats


def nearest_neighbours(gallery_emb, probe_emb) -> tuple[np.ndarray, np.ndarray]:
    """``(index, distance)`` of each probe's nearest gallery embedding by Euclidean distance
    (first index on ties)."""
    gallery = np.asarray(gallery_emb, dtype=np.float64)
    probe = np.asarray(probe_emb, dtype=np.float64)
    if gallery.ndim != 2 or probe.ndim != 2 or gallery.shape[1] != probe.shape[1] or not len(gallery):
        raise ValueError(f"need 2-D embeddings of equal width and a non-empty gallery, "
                         f"got gallery {gallery.shape} and probes {probe.shape}")
    g_sq = np.sum(gallery**2, axis=1)
    index, dist = np.empty(len(probe), dtype=np.int64), np.empty(len(probe))
    for start in range(0, len(probe), _CHUNK):
        block = probe[start:start + _CHUNK]
        # |p - g|^2 expanded into one matrix product; rounding can make it slightly negative.
        sq = np.sum(block**2, axis=1)[:, None] + g_sq[None, :] - 2.0 * block @ gallery.T
        best = np.argmin(sq, axis=1)
        index[start:start + len(block)] = best
        dist[start:start + len(block)] = np.sqrt(np.maximum(sq[np.arange(len(block)), best], 0.0))
    return index, dist


def rank1_accuracy(gallery_emb, gallery_labels, probe_emb, probe_labels) -> float:
    """Fraction of probes whose nearest gallery embedding carries the probe's label. A probe of an
    identity missing from the gallery can never be right and counts as an error."""
    index, _ = nearest_neighbours(gallery_emb, probe_emb)
    predicted = np.asarray(gallery_labels)[index]
    return float(np.mean(predicted == np.asarray(probe_labels))) if len(index) else float("nan")


class OpenSetResult(NamedTuple):
    """Open-set scores; a rate over an empty set is ``nan``.

    * ``dir`` (detection and identification rate): known probes that are accepted AND given the
      right identity, over all known probes;
    * ``far`` (false accept rate): unknown probes accepted as anyone, over all unknown probes;
    * ``accuracy``: probes answered correctly (known: right identity; unknown: rejected) over all.
    """

    dir: float
    far: float
    accuracy: float
    n_known: int
    n_unknown: int


def _rate(hits, total) -> float:
    return float(hits / total) if total else float("nan")


def open_set(gallery_emb, gallery_labels, probe_emb, probe_labels, threshold: float) -> OpenSetResult:
    """Score open-set identification at ``threshold`` (see ``OpenSetResult`` for definitions)."""
    gallery_labels, probe_labels = np.asarray(gallery_labels), np.asarray(probe_labels)
    index, dist = nearest_neighbours(gallery_emb, probe_emb)
    accepted = dist <= threshold
    known = np.isin(probe_labels, gallery_labels)
    identified = accepted & (gallery_labels[index] == probe_labels)  # implies known
    false_accepts = accepted & ~known
    n_known, n_unknown = int(known.sum()), int((~known).sum())
    correct = int(identified.sum()) + n_unknown - int(false_accepts.sum())
    return OpenSetResult(_rate(identified.sum(), n_known), _rate(false_accepts.sum(), n_unknown),
                         _rate(correct, len(probe_labels)), n_known, n_unknown)


def evaluate_identification(gallery_emb, gallery_labels, probe_emb, probe_labels,
                            threshold: float | None = None) -> Iterator[tuple[str, float]]:
    """Yield ``("rank1", closed-set accuracy over the probes whose identity is enrolled)`` and,
    when ``threshold`` is given, ``("open_set_dir" | "open_set_far" | "open_set_accuracy", v)``
    over all probes."""
    probe_emb, probe_labels = np.asarray(probe_emb), np.asarray(probe_labels)
    known = np.isin(probe_labels, np.asarray(gallery_labels))
    rank1 = (rank1_accuracy(gallery_emb, gallery_labels, probe_emb[known], probe_labels[known])
             if known.any() else float("nan"))
    yield "rank1", rank1
    if threshold is not None:
        result = open_set(gallery_emb, gallery_labels, probe_emb, probe_labels, threshold)
        yield "open_set_dir", result.dir
        yield "open_set_far", result.far
        yield "open_set_accuracy", result.accuracy
