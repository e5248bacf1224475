"""Distillation losses: a student's embeddings taught by a teacher's (train.teacher).

Pure functions of (student embeddings, teacher embeddings, mask), both L2-normalised, so they
compose with the triplet loss in one train step (trainer/train.py) and are tested on their own:

- ``embedding_matching``: the mean squared distance between each student embedding and the
  teacher's embedding of the same photo (= 2 - 2 cos for unit vectors). It asks the student to
  reproduce the teacher's space itself, so a gallery enrolled with one would be understood by the
  other's geometry.
- ``relational_matching``: the mean squared difference between the batch's student and teacher
  pairwise-distance matrices (Park et al. 2019, "Relational Knowledge Distillation", distance-wise
  term, without their normalisation since both spaces are unit spheres). It only asks the student to
  keep who is near whom, which is what verification and identification use.
- ``centre_matching``: the KL divergence from the teacher's to the student's softmax over their cosine
  similarities to fixed class centres (the teacher's centres of the training people,
  ``train.margin_softmax_centres: teacher``), as Hinton et al.'s soft targets over a classifier the
  student shares with its teacher: each photo learns how much it resembles every training person,
  not only which one it is.

``mask`` is 1 for photos the teacher embedded and 0 for the rest; masked photos take no part.
"""
from __future__ import annotations

import tensorflow as tf


def embedding_matching(student: tf.Tensor, teacher: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over masked rows of ||student - teacher||²."""
    mask = tf.cast(mask, student.dtype)
    squared = tf.reduce_sum(tf.square(student - tf.cast(teacher, student.dtype)), axis=1)
    return tf.reduce_sum(squared * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def _distances(embeddings: tf.Tensor) -> tf.Tensor:
    dot = tf.matmul(embeddings, embeddings, transpose_b=True)
    squared = tf.maximum(2.0 - 2.0 * dot, 0.0)  # unit vectors: ||a - b||² = 2 - 2 a·b
    return tf.sqrt(squared + 1e-12)


def relational_matching(student: tf.Tensor, teacher: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over pairs of distinct masked rows of (d_student(i, j) - d_teacher(i, j))²."""
    mask = tf.cast(mask, student.dtype)
    pair_mask = mask[:, None] * mask[None, :] * (1.0 - tf.eye(tf.shape(student)[0], dtype=student.dtype))
    gap = _distances(student) - _distances(tf.cast(teacher, student.dtype))
    return tf.reduce_sum(tf.square(gap) * pair_mask) / tf.maximum(tf.reduce_sum(pair_mask), 1.0)


def centre_matching(student: tf.Tensor, teacher: tf.Tensor, mask: tf.Tensor, centres: tf.Tensor,
                    scale: float) -> tf.Tensor:
    """Mean over masked rows of KL(p_teacher || p_student), p = softmax(scale · cos(embedding, centres))."""
    mask = tf.cast(mask, tf.float32)
    unit_centres = tf.math.l2_normalize(tf.cast(centres, tf.float32), axis=1)
    student_logits = scale * tf.matmul(tf.cast(student, tf.float32), unit_centres, transpose_b=True)
    teacher_logits = scale * tf.matmul(tf.cast(teacher, tf.float32), unit_centres, transpose_b=True)
    p_teacher = tf.nn.softmax(teacher_logits, axis=1)
    per_row = tf.reduce_sum(p_teacher * (tf.nn.log_softmax(teacher_logits, axis=1)
                                         - tf.nn.log_softmax(student_logits, axis=1)), axis=1)
    return tf.reduce_sum(per_row * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def teacher_cosine(student: tf.Tensor, teacher: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over masked rows of the cosine between student and teacher embeddings (a report, not a
    loss: for unit vectors it is 1 - embedding_matching / 2)."""
    mask = tf.cast(mask, student.dtype)
    cosines = tf.reduce_sum(student * tf.cast(teacher, student.dtype), axis=1)
    return tf.reduce_sum(cosines * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
