"""Eigenfaces (Turk & Pentland 1991) and Fisherfaces (Belhumeur et al. 1997): linear subspaces of
grayscale face crops, compared by Euclidean distance, as OpenCV's Eigen/FisherFaceRecognizer.

* Eigenfaces: the crops' ``EIGENFACES`` principal components (PCA on mean-centred pixels; no
  whitening, as the paper). Fitting uses no labels beyond the count check.
* Fisherfaces: PCA, then Fisher's linear discriminant (LDA) to at most c - 1 dimensions (c people):
  the projection that best separates the training people relative to the spread of each one's
  photos. The paper reduces to N - c dimensions first (N training crops), the most that keeps the
  within-class scatter non-singular; here the PCA keeps at most ``EIGENFACES`` components, because
  the test people are not the training people: on the validation split of runs/s13-distill-40ep
  (100 training identities, 1,053 crops) N - c = 953 dimensions gave pair AUC 0.519, chance, as the
  discriminant learned those 100 people's photos by heart, and 150 gave 0.601 (200: 0.600, 50: 0.589).
"""
from __future__ import annotations

import numpy as np

from experiments.baselines.crops import check_labels, grayscale

EIGENFACES = 150  # as scikit-learn's Eigenfaces example; fewer when there are fewer crops


def _flat(images) -> np.ndarray:
    gray = grayscale(images)
    return gray.reshape(len(gray), -1)


class Eigenfaces:
    """PCA of grayscale crops; ``features`` are the projections onto the first components."""

    name, metric = "eigenfaces", "l2"

    def __init__(self, components: int = EIGENFACES, seed: int = 0):
        self.components, self.seed, self.pca = components, seed, None

    def fit(self, images, labels) -> "Eigenfaces":
        from sklearn.decomposition import PCA

        pixels = _flat(images)
        check_labels(pixels, labels, self.name, least=1)
        count = min(self.components, len(pixels) - 1, pixels.shape[1])
        if count < 1:
            raise ValueError(f"{self.name} needs at least 2 training crops, got {len(pixels)}")
        self.pca = PCA(count, svd_solver="randomized", random_state=self.seed).fit(pixels)
        return self

    def features(self, images) -> np.ndarray:
        if self.pca is None:
            raise ValueError(f"{self.name}: fit it on training crops first")
        return self.pca.transform(_flat(images)).astype(np.float32)


class Fisherfaces:
    """PCA to min(N - c, ``components``) dimensions, then LDA to at most c - 1; ``features`` are the
    LDA projections."""

    name, metric = "fisherfaces", "l2"

    def __init__(self, components: int = EIGENFACES, seed: int = 0):
        self.components, self.seed, self.pca, self.lda = components, seed, None, None

    def fit(self, images, labels) -> "Fisherfaces":
        from sklearn.decomposition import PCA
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        pixels = _flat(images)
        labels = check_labels(pixels, labels, self.name, least=2)
        people = len(set(labels))
        count = min(len(pixels) - people, self.components, pixels.shape[1])
        if count < 1:
            raise ValueError(f"{self.name} needs more training crops than people (a second photo of someone), "
                             f"got {len(pixels)} crops of {people} people")
        self.pca = PCA(count, svd_solver="randomized", random_state=self.seed).fit(pixels)
        self.lda = LinearDiscriminantAnalysis(n_components=min(people - 1, count))
        self.lda.fit(self.pca.transform(pixels), labels.astype(str))
        return self

    def features(self, images) -> np.ndarray:
        if self.lda is None:
            raise ValueError(f"{self.name}: fit it on training crops first")
        return self.lda.transform(self.pca.transform(_flat(images))).astype(np.float32)
