"""LBP histograms (Ahonen, Hadid & Pietikäinen 2004): local texture, no learning.

Each pixel gets its uniform local binary pattern over 8 neighbours at radius 1 (scikit-image's
``local_binary_pattern``, ``nri_uniform``: the 58 patterns with at most two 0/1 transitions, plus
one bin for all others, 59 bins). The crop is cut into a 7 x 7 grid of cells (the paper's window
grid); each cell's histogram is normalised to sum 1, so the crop size does not matter, and the
cells' histograms are concatenated (7 * 7 * 59 = 2,891 values). Faces are compared by chi-square
distance. The paper also weights the cells (eyes more than cheeks); here every cell counts alike,
as in OpenCV's LBPHFaceRecognizer.
"""
from __future__ import annotations

import numpy as np

from experiments.baselines.crops import check_crops, check_labels, grayscale

POINTS, RADIUS = 8, 1
BINS = POINTS * (POINTS - 1) + 3  # nri_uniform: 59 for 8 points
GRID = 7


class LBPHistograms:
    """Concatenated per-cell uniform-LBP histograms, compared by chi-square."""

    name, metric = "lbp", "chi2"

    def __init__(self, grid: int = GRID):
        self.grid = grid

    def fit(self, images, labels) -> "LBPHistograms":
        """Nothing to learn; checks the crops and labels like the other baselines."""
        check_labels(check_crops(images), labels, self.name, least=1)
        return self

    def features(self, images) -> np.ndarray:
        from skimage.feature import local_binary_pattern

        gray = (grayscale(images) * 255).round().astype(np.uint8)  # integer input, as the LBP expects
        size = gray.shape[1]
        if size < 2 * self.grid:
            raise ValueError(f"{self.name}: crops of {size} px are too small for a {self.grid} x {self.grid} grid")
        # Cell of each pixel, row-major over the grid; np.array_split's edges as rounded linspace.
        edges = np.linspace(0, size, self.grid + 1).round().astype(int)
        band = np.searchsorted(edges, np.arange(size), side="right") - 1
        cell = (band[:, None] * self.grid + band[None, :]).ravel()
        out = np.empty((len(gray), self.grid * self.grid, BINS), np.float32)
        for i, image in enumerate(gray):
            codes = local_binary_pattern(image, POINTS, RADIUS, method="nri_uniform").astype(np.int64).ravel()
            counts = np.bincount(cell * BINS + codes, minlength=self.grid * self.grid * BINS)
            out[i] = counts.reshape(-1, BINS)
        out /= out.sum(axis=2, keepdims=True)
        return out.reshape(len(gray), -1)
