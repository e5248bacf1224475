"""What the baselines read: a batch of aligned face crops, checked, in grayscale.

Eigenfaces, Fisherfaces and LBP all work on intensity, as their papers and OpenCV's recognisers
do; the colour crops the network sees are converted with scikit-image's ``rgb2gray`` (ITU-R 709 luma).
"""
from __future__ import annotations

import numpy as np


def check_crops(images) -> np.ndarray:
    """``images`` as float32 [N, S, S, 3] with N >= 1, else a ValueError saying what came instead."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2] or not len(images):
        raise ValueError(f"expected aligned crops [N >= 1, S, S, 3], got an array of shape {images.shape}")
    return images


def grayscale(images) -> np.ndarray:
    """float32 [N, S, S] in [0, 1] from RGB crops with pixels in [0, 255]."""
    from skimage.color import rgb2gray

    return rgb2gray(np.clip(check_crops(images) / 255.0, 0.0, 1.0)).astype(np.float32)


def check_labels(images: np.ndarray, labels, method: str, least: int = 1) -> np.ndarray:
    """``labels`` as an array, one per crop and at least ``least`` distinct ones."""
    labels = np.asarray(list(labels), dtype=object)
    if len(labels) != len(images):
        raise ValueError(f"{method}: {len(images)} crops but {len(labels)} labels")
    if len(set(labels)) < least:
        raise ValueError(f"{method} needs training crops of at least {least} people, got {len(set(labels))}")
    return labels
