"""Distillation losses (trainer/distill.py): values on hand-made cases and their gradients."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.distill import centre_matching, embedding_matching, relational_matching, teacher_cosine


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return tf.constant(rows / np.linalg.norm(rows, axis=1, keepdims=True))


def test_embedding_matching_is_the_mean_squared_distance_over_masked_rows():
    student = unit([[1, 0], [0, 1], [1, 1]])
    teacher = unit([[1, 0], [1, 0], [-1, -1]])
    mask = tf.constant([1.0, 1.0, 0.0])
    # row 0 matches (0), row 1 is 90° away (||a-b||² = 2), row 2 is masked out
    assert float(embedding_matching(student, teacher, mask)) == pytest.approx(1.0, abs=1e-6)
    assert float(embedding_matching(student, teacher, tf.zeros(3))) == 0.0


def test_relational_matching_ignores_rotations_but_not_changed_neighbours():
    rng = np.random.default_rng(0)
    teacher = unit(rng.normal(size=(8, 16)))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    rotated = tf.constant(teacher.numpy() @ q.astype(np.float32))  # same geometry, other coordinates
    mask = tf.ones(8)
    assert float(relational_matching(rotated, teacher, mask)) == pytest.approx(0.0, abs=1e-5)
    assert float(embedding_matching(rotated, teacher, mask)) > 0.5  # embedding matching does see it
    shuffled = tf.gather(teacher, [1, 0, 3, 2, 5, 4, 7, 6])
    assert float(relational_matching(shuffled, teacher, mask)) > 0.05


def test_masked_rows_take_no_part_in_relations():
    rng = np.random.default_rng(1)
    teacher = unit(rng.normal(size=(5, 8)))
    student = np.array(teacher)
    student[4] = -student[4]  # only the masked row differs
    mask = tf.constant([1.0, 1, 1, 1, 0])
    assert float(relational_matching(tf.constant(student), teacher, mask)) == pytest.approx(0.0, abs=1e-5)


def test_both_terms_pull_the_student_towards_the_teacher():
    rng = np.random.default_rng(2)
    teacher = unit(rng.normal(size=(6, 4)))
    raw = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    mask = tf.ones(6)

    def loss_of(student):
        return embedding_matching(student, teacher, mask) + 0.5 * relational_matching(student, teacher, mask)

    with tf.GradientTape() as tape:
        loss = loss_of(tf.math.l2_normalize(raw, axis=1))
    raw.assign_sub(0.1 * tape.gradient(loss, raw))
    assert float(loss_of(tf.math.l2_normalize(raw, axis=1))) < float(loss)


def test_teacher_cosine_is_one_minus_half_the_embedding_term_over_masked_rows():
    rng = np.random.default_rng(5)
    student, teacher = unit(rng.normal(size=(5, 8))), unit(rng.normal(size=(5, 8)))
    mask = tf.constant([1.0, 1, 0, 1, 1])
    expected = float(np.mean(np.sum(student * teacher, axis=1)[[0, 1, 3, 4]]))
    assert float(teacher_cosine(tf.constant(student), teacher, mask)) == pytest.approx(expected, rel=1e-5)
    assert float(teacher_cosine(tf.constant(student), teacher, mask)) == pytest.approx(
        1 - float(embedding_matching(tf.constant(student), teacher, mask)) / 2, rel=1e-5)


def test_centre_matching_is_the_kl_of_softmaxed_centre_cosines_over_masked_rows():
    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(5, 8))).numpy() * 3.0  # not unit: the loss normalises them
    teacher, student = unit(rng.normal(size=(4, 8))), unit(rng.normal(size=(4, 8)))
    mask = tf.constant([1.0, 1.0, 1.0, 0.0])

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    unit_centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    p = softmax(10.0 * teacher.numpy() @ unit_centres.T)
    q = softmax(10.0 * student.numpy() @ unit_centres.T)
    expected = (p * (np.log(p) - np.log(q))).sum(axis=1)[:3].mean()
    assert float(centre_matching(student, teacher, mask, centres, 10.0)) == pytest.approx(expected, rel=1e-4)
    assert float(centre_matching(teacher, teacher, mask, centres, 10.0)) == pytest.approx(0.0, abs=1e-6)
    # A rotation the centres do not share is seen (unlike the relational term): the centres are fixed.
    q_rot, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    rotated = tf.constant(teacher.numpy() @ q_rot.astype(np.float32))
    assert float(centre_matching(rotated, teacher, mask, centres, 10.0)) > 0.05
    assert float(centre_matching(student, teacher, tf.zeros(4), centres, 10.0)) == 0.0
