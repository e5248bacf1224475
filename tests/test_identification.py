"""Closed- and open-set identification against a gallery, on a hand-placed 2-D example."""
import numpy as np
import pytest

from trainer.evaluation.identification import (evaluate_identification, nearest_neighbours, open_set,
                                               rank1_accuracy)

# Gallery: A enrolled at (0, 0) and (0, -5), B at (10, 0).
GALLERY = np.array([[0, 0], [0, -5], [10, 0]], dtype=float)
GALLERY_LABELS = np.array(["A", "A", "B"])
# Probe            nearest, distance  at threshold 2 (accept if <= 2)
# A (1, 0)     ->  A, 1               accepted, right       identified
# A (6, 0)     ->  B, 4               rejected              missed
# A (9, 0)     ->  B, 1               accepted, wrong name  missed (misidentified)
# B (10, 3)    ->  B, 3               rejected              missed
# B (10, 2)    ->  B, 2               accepted (inclusive)  identified
# C (5, 1)     ->  A, sqrt(26)        rejected              correct rejection
# C (0, 1.5)   ->  A, 1.5             accepted              false accept
# C (20, 0)    ->  B, 10              rejected              correct rejection
PROBES = np.array([[1, 0], [6, 0], [9, 0], [10, 3], [10, 2], [5, 1], [0, 1.5], [20, 0]], dtype=float)
PROBE_LABELS = np.array(["A", "A", "A", "B", "B", "C", "C", "C"])


def test_nearest_neighbours_by_hand():
    index, dist = nearest_neighbours(GALLERY, PROBES)
    np.testing.assert_array_equal(index, [0, 2, 2, 2, 2, 0, 0, 2])
    np.testing.assert_allclose(dist, [1, 4, 1, 3, 2, np.sqrt(26), 1.5, 10])


def test_nearest_neighbours_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    gallery, probes = rng.normal(size=(40, 8)), rng.normal(size=(1500, 8))  # > one 1024-row chunk
    full = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)
    index, dist = nearest_neighbours(gallery, probes)
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(dist, full.min(axis=1), atol=1e-9)


def test_rank1_by_hand():
    """Known probes: A(1,0) right, A(6,0) -> B, A(9,0) -> B, both B right: 3 of 5.
    Over all 8 probes the three unknown C probes can only be wrong: 3 of 8."""
    known = PROBE_LABELS != "C"
    assert rank1_accuracy(GALLERY, GALLERY_LABELS, PROBES[known], PROBE_LABELS[known]) == 0.6
    assert rank1_accuracy(GALLERY, GALLERY_LABELS, PROBES, PROBE_LABELS) == 3 / 8


def test_open_set_by_hand():
    """Threshold 2 (table above): 5 known probes, 2 identified -> DIR 2/5; 3 unknown, 1 accepted
    -> FAR 1/3; correct answers 2 identified + 2 rejected unknowns = 4 of 8 -> accuracy 1/2."""
    result = open_set(GALLERY, GALLERY_LABELS, PROBES, PROBE_LABELS, threshold=2.0)
    assert (result.n_known, result.n_unknown) == (5, 3)
    assert result.dir == pytest.approx(0.4) and result.far == pytest.approx(1 / 3)
    assert result.accuracy == 0.5


def test_open_set_threshold_extremes():
    """Threshold below every distance: all rejected -> DIR 0, FAR 0, accuracy = unknown share 3/8.
    Above every distance: open set degenerates to closed set -> DIR = rank-1 = 3/5, FAR 1."""
    low = open_set(GALLERY, GALLERY_LABELS, PROBES, PROBE_LABELS, threshold=0.5)
    assert (low.dir, low.far, low.accuracy) == (0.0, 0.0, 3 / 8)
    high = open_set(GALLERY, GALLERY_LABELS, PROBES, PROBE_LABELS, threshold=100.0)
    assert (high.dir, high.far) == (0.6, 1.0)


def test_open_set_without_unknown_probes_has_nan_far():
    known = PROBE_LABELS != "C"
    result = open_set(GALLERY, GALLERY_LABELS, PROBES[known], PROBE_LABELS[known], threshold=2.0)
    assert np.isnan(result.far) and result.n_unknown == 0


def test_evaluate_identification_yields_metrics():
    closed = dict(evaluate_identification(GALLERY, GALLERY_LABELS, PROBES, PROBE_LABELS))
    assert closed == {"rank1": 0.6}  # rank-1 over enrolled identities only
    report = list(evaluate_identification(GALLERY, GALLERY_LABELS, PROBES, PROBE_LABELS, threshold=2.0))
    assert [name for name, _ in report] == ["rank1", "open_set_dir", "open_set_far", "open_set_accuracy"]
    assert dict(report)["open_set_accuracy"] == 0.5


def test_integer_labels_and_shape_errors():
    assert rank1_accuracy(GALLERY, [0, 0, 1], PROBES[:2], [0, 0]) == 0.5
    with pytest.raises(ValueError, match="equal width"):
        nearest_neighbours(GALLERY, np.zeros((2, 3)))
