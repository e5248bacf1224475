"""Classical face-recognition baselines: Eigenfaces (PCA), Fisherfaces (PCA + LDA) and LBP histograms.

Each maps aligned face crops (float32 RGB [N, S, S, 3], pixels in [0, 255], the trainer's
``pipeline.ordered_images`` crops) to one feature vector per face, compared with the distance its
method defines (``metric``: ``"l2"`` for the subspace methods, as OpenCV's Eigen/FisherFaceRecognizer,
``"chi2"`` for LBP histograms, as Ahonen et al. 2004 and OpenCV's LBPHFaceRecognizer).
The subspace methods are fitted on labelled training crops (``fit(images, labels)``); LBP learns
nothing, its ``fit`` only checks its input. experiments/comparison.py puts them beside the triplet
network on the same crops, pairs and identification protocol.

OpenCV's contrib ``face`` module is not in opencv-python-headless, so these are built on
scikit-learn (PCA, LDA) and scikit-image (``local_binary_pattern``; the ``baselines`` extra).
"""
from __future__ import annotations

from experiments.baselines.distances import cross_distances, pair_distances
from experiments.baselines.lbp import LBPHistograms
from experiments.baselines.subspace import Eigenfaces, Fisherfaces

BASELINES = {"eigenfaces": Eigenfaces, "fisherfaces": Fisherfaces, "lbp": LBPHistograms}


def build(name: str):
    """A fresh, unfitted baseline by name (one of ``BASELINES``)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    return BASELINES[name]()


__all__ = ["BASELINES", "build", "cross_distances", "pair_distances", "Eigenfaces", "Fisherfaces", "LBPHistograms"]
