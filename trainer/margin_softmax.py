"""Margin-softmax losses over the training identities (``train.margin_softmax``): CosFace and ArcFace.

The strongest open face-embedding recipes (insightface's ArcFace, CosFace; Deng et al. 2019, Wang
et al. 2018) replace or join the metric loss with a classifier over the training people whose
target logit is penalised by a margin on the unit sphere:

- CosFace: logit_y = s · (cos θ_y − m)
- ArcFace: logit_y = s · cos(θ_y + m)   (while θ_y + m < π; past it, CosFace's form, as insightface)

with cos θ_j = ê · ŵ_j between the L2-normalised embedding and the normalised weight of person j.
Every other logit is s · cos θ_j. The loss is the softmax cross-entropy, averaged over the batch's
labelled photos only: photos of an unlabeled source (negative labels, trainer/pipeline.py) and any
label outside the head's classes take no part.

``margin_softmax_loss`` is a pure function (tested against NumPy); ``MarginHead`` holds the class
weights, a [classes, dim] variable trained with the network and dropped at export: the shipped model
is the embedding network alone. The head is checkpointed with the run (``trainer/checkpoints.py``), so a
resumed run goes on with it; a warm start, whose people differ, drops it (``trainer/warm_start.py``).
``teacher_centres`` gives the fixed weights of ``train.margin_softmax_centres: teacher`` (ProxylessKD).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

KINDS = ("cosface", "arcface")


def margin_logits(embeddings, labels, class_weights, kind: str, scale: float, margin: float):
    """[B, classes] logits with the margin applied at each row's label (rows with no class: none)."""
    if kind not in KINDS:
        raise ValueError(f"margin-softmax kind must be one of {', '.join(KINDS)}, got {kind!r}")
    e = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
    w = tf.math.l2_normalize(tf.cast(class_weights, tf.float32), axis=1)
    cos = tf.clip_by_value(tf.matmul(e, w, transpose_b=True), -1.0 + 1e-7, 1.0 - 1e-7)
    classes = tf.shape(w)[0]
    labels = tf.cast(labels, tf.int32)
    target = tf.one_hot(tf.where((labels >= 0) & (labels < classes), labels, -1), classes, dtype=tf.float32)
    if kind == "cosface":
        penalised = cos - margin
    else:
        theta = tf.acos(cos)
        # Past θ = π − m, cos(θ + m) would rise again: fall back to the (monotonic) CosFace form.
        penalised = tf.where(theta + margin < math.pi, tf.cos(theta + margin), cos - margin * math.sin(margin))
    return scale * (cos + target * (penalised - cos))


def margin_softmax_loss(embeddings, labels, class_weights, kind: str = "cosface", scale: float = 30.0,
                        margin: float = 0.35):
    """Mean softmax cross-entropy of the margin logits over rows whose label is a class of the head."""
    classes = tf.shape(class_weights)[0]
    labels = tf.cast(labels, tf.int32)
    valid = (labels >= 0) & (labels < classes)
    logits = margin_logits(embeddings, labels, class_weights, kind, scale, margin)
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.where(valid, labels, 0), logits)
    mask = tf.cast(valid, tf.float32)
    return tf.reduce_sum(per_row * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def teacher_centres(per_class: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """[classes, dim] unit vectors, one per (vectors, ok) pair of ``per_class``: the normalised mean of
    that class's teacher embeddings (rows the teacher failed on, ``ok`` False, take no part). A class
    with no embedded photo gets a zero row, which no embedding is near."""
    sums = np.stack([vectors[ok].sum(axis=0, dtype=np.float64) for vectors, ok in per_class])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


class MarginHead(tf.Module):
    """The training people's class weights and the loss over them (``train.margin_softmax``);
    ``centres`` (a [classes, dim] array) fixes them instead of learning them from a random start."""

    def __init__(self, classes: int, dim: int, kind: str, scale: float, margin: float, seed: int = 0,
                 centres: np.ndarray | None = None):
        super().__init__(name="margin_head")
        init = tf.random.stateless_normal([classes, dim], seed=[seed, 7], stddev=0.01) if centres is None else centres
        self.class_weights = tf.Variable(init, trainable=centres is None, name="class_weights")
        self.kind, self.scale, self.margin = kind, scale, margin

    def loss(self, embeddings, labels):
        return margin_softmax_loss(embeddings, labels, self.class_weights, self.kind, self.scale, self.margin)
