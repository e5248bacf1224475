"""The face comparers experiments/comparison.py puts side by side, each as a ``Method``.

A method is what the protocol needs to score it: feature rows for the validation and test crops,
the distance between two rows (smaller = more alike) pairwise and query-by-gallery, and how it turns
one crop into features (timed per query). The deep ones share the run's network:

* ``network``: its (mirror-averaged) embeddings, Keras float32, L2 distance;
* ``head``: the same embeddings, distance 1 − P(same) of the Siamese head (enroll.verification_head);
* ``tflite``: the network converted by serving/tflite.py (float16, or int8 calibrated on the run's
  training crops) and run by the LiteRT interpreter (serving/tflite_embedder.py), L2 distance;

and the classical ones are fitted on training crops (experiments/baselines/): Eigenfaces,
Fisherfaces (L2), LBP histograms (chi-square).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from experiments.baselines import build as build_baseline, cross_distances, pair_distances


@dataclass
class Crops:
    """Aligned crops of one split, as the trainer reads them (float32 [N, S, S, 3], pixels 0–255)."""

    images: np.ndarray
    identities: list[str]
    sources: list[str]


@dataclass
class Method:
    name: str
    kind: str  # "deep" or "classical"
    val: np.ndarray  # features of the validation crops (τ is calibrated on them)
    test: np.ndarray  # features of the test crops
    pair_distance: Callable[[np.ndarray, np.ndarray], np.ndarray]  # row i of a vs row i of b: [N]
    cross_distance: Callable[[np.ndarray, np.ndarray], np.ndarray]  # queries x gallery: [Q, G]
    featurise: Callable[[np.ndarray], np.ndarray]  # crops -> feature rows
    fit_s: float = 0.0  # fitting (baselines) or conversion (TFLite) seconds; 0 for the trained network
    detail: dict = field(default_factory=dict)  # what else the JSON should say about it
    features: int = 0  # feature dimensions

    def __post_init__(self):
        self.features = int(self.test.shape[1])


L2 = (partial(pair_distances, metric="l2"), partial(cross_distances, metric="l2"))


def _embedded(name: str, kind: str, embed, val: Crops, test: Crops, fit_s: float = 0.0) -> Method:
    return Method(name, kind, embed(val.images), embed(test.images), *L2, embed, fit_s)


def network(model, val: Crops, test: Crops) -> Method:
    """The run's inference model as a ``tf.function`` (what its SavedModel serves), batches of 32."""
    from experiments.edge_export import keras_embedder

    return _embedded("triplet network (nearest)", "deep", keras_embedder(model), val, test)


def head(network_method: Method, train_embeddings: np.ndarray, train: Crops) -> Method:
    """The Siamese head fitted on the training crops' embeddings (network frozen)."""
    from enroll.verification_head import fit_head, pair_probability

    start = time.perf_counter()
    fitted = fit_head(train_embeddings, train.identities, train.sources)
    fit_s = time.perf_counter() - start

    def pair(left, right):
        return 1.0 - pair_probability(fitted, left, right)

    def cross(queries, gallery):
        return np.stack([1.0 - pair_probability(fitted, gallery, query) for query in np.atleast_2d(queries)])

    n = network_method
    return Method("Siamese head (logistic regression)", "deep", n.val, n.test, pair, cross, n.featurise, fit_s,
                  {"train_pairs": fitted["train_pairs"], "train_accuracy": fitted["train_accuracy"]})


def tflite(model, quantize: str, representative: np.ndarray, scratch: Path, threads: int,
           val: Crops, test: Crops) -> Method:
    """The network as a TFLite flatbuffer (``quantize``: float16 or int8), on the LiteRT interpreter."""
    from serving.tflite import write_tflite
    from serving.tflite_embedder import TFLiteEmbedder

    start = time.perf_counter()
    path = Path(scratch) / f"{quantize}.tflite"
    write_tflite(model, path, quantize, representative if quantize == "int8" else None)
    embedder = TFLiteEmbedder(path, threads)
    fit_s = time.perf_counter() - start
    return _embedded(f"TFLite {quantize} (nearest)", "deep", lambda images: embedder.embed(images, 32), val, test,
                     fit_s)


def baseline(name: str, train: Crops, val: Crops, test: Crops) -> Method:
    """A classical baseline fitted on the training crops, compared by its own distance."""
    method = build_baseline(name)
    start = time.perf_counter()
    method.fit(train.images, train.identities)
    fit_s = time.perf_counter() - start
    label = {"eigenfaces": "Eigenfaces (PCA)", "fisherfaces": "Fisherfaces (LDA)", "lbp": "LBP histograms (χ²)"}[name]
    return Method(label, "classical", method.features(val.images), method.features(test.images),
                  partial(pair_distances, metric=method.metric), partial(cross_distances, metric=method.metric),
                  method.features, fit_s)
