"""The distances the baselines compare features with: ``"l2"`` (Euclidean) and ``"chi2"`` (chi-square).

Chi-square, sum((a - b)^2 / (a + b)) over the bins, is the histogram distance of LBP face
recognition (Ahonen et al. 2004); bins empty in both histograms contribute 0. Smaller is more alike
for both, as for embedding distances, so thresholds and nearest-neighbour search work the same way.
"""
from __future__ import annotations

import numpy as np

METRICS = ("l2", "chi2")


def _check(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown distance {metric!r}; expected one of {', '.join(METRICS)}")


def pair_distances(left, right, metric: str) -> np.ndarray:
    """Distance of each row of ``left`` to the same row of ``right``: [N]."""
    _check(metric)
    left, right = np.asarray(left, np.float64), np.asarray(right, np.float64)
    if metric == "l2":
        return np.linalg.norm(left - right, axis=1)
    total = left + right
    # 0/0 (a bin empty in both) is 0: where total is 0 the numerator is 0 too.
    return np.sum(np.square(left - right) / np.where(total > 0, total, 1.0), axis=1)


def cross_distances(queries, gallery, metric: str) -> np.ndarray:
    """Distance of every query to every gallery row: [queries, gallery]."""
    from sklearn.metrics.pairwise import additive_chi2_kernel, euclidean_distances

    _check(metric)
    queries, gallery = np.atleast_2d(np.asarray(queries, np.float64)), np.asarray(gallery, np.float64)
    if metric == "l2":
        return euclidean_distances(queries, gallery)
    return -additive_chi2_kernel(queries, gallery)  # the kernel is minus the chi-square distance
