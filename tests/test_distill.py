"""Distillation losses (trainer/distill.py): values on hand-made cases and their gradients."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.distill import centre_matching, distillation_loss, embedding_matching, relational_matching


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


def test_weighted_sum_and_gradient_pull_the_student_towards_the_teacher():
    rng = np.random.default_rng(2)
    teacher = unit(rng.normal(size=(6, 4)))
    raw = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    mask = tf.ones(6)
    with tf.GradientTape() as tape:
        student = tf.math.l2_normalize(raw, axis=1)
        loss = distillation_loss(student, teacher, mask, 1.0, 0.5)
    expected = float(embedding_matching(student, teacher, mask)) + 0.5 * float(relational_matching(student, teacher, mask))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    raw.assign_sub(0.1 * tape.gradient(loss, raw))
    after = distillation_loss(tf.math.l2_normalize(raw, axis=1), teacher, mask, 1.0, 0.5)
    assert float(after) < float(loss)
    assert float(distillation_loss(student, teacher, mask, 0.0, 0.0)) == 0.0


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
