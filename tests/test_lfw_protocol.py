"""LFW protocol: pairs.txt parsing and the verification metrics, on hand-worked cases and against
scikit-learn on random data."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from trainer.evaluation.lfw_protocol import (Pair, best_threshold, calculate_val_far, equal_error_rate,
                                             evaluate_pairs, kfold_accuracy, read_pairs, roc, roc_auc,
                                             threshold_at_far, val_at_far, write_pairs)

LFW_SNIPPET = """2\t1
Abel_Pacheco\t1\t4
Abdel_Madi_Shabneh\t1\tDean_Barker\t1
Akhmed_Zakayev\t1\t3
Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1
"""


def test_read_pairs_lfw_layout(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(LFW_SNIPPET)
    assert read_pairs(path) == [
        Pair("Abel_Pacheco", 1, "Abel_Pacheco", 4, True, 0),
        Pair("Abdel_Madi_Shabneh", 1, "Dean_Barker", 1, False, 0),
        Pair("Akhmed_Zakayev", 1, "Akhmed_Zakayev", 3, True, 1),
        Pair("Abdel_Madi_Shabneh", 1, "Giancarlo_Fisichella", 1, False, 1),
    ]


def test_single_number_header_means_one_fold(tmp_path):
    path = tmp_path / "pairsDevTrain.txt"
    path.write_text("1\nA-b.c\t1\t2\nA-b.c\t1\tO'Neil\t3\n\n")
    assert [(p.fold, p.same) for p in read_pairs(path)] == [(0, True), (0, False)]


def test_write_read_round_trip(tmp_path):
    pairs = [Pair("a", 1, "a", 2, True, 0), Pair("a", 1, "b", 1, False, 0),
             Pair("c", 2, "c", 3, True, 1), Pair("b", 1, "c", 1, False, 1)]
    path = tmp_path / "pairs.txt"
    write_pairs(path, pairs, folds=2, n=1)
    assert path.read_text().splitlines()[0] == "2\t1"
    assert read_pairs(path) == pairs


@pytest.mark.parametrize("text, match", [
    ("ten 300\n", r":1: expected header"),
    ("1 1\na 1 x\na 1 b 2\n", r":2: image indices must be integers"),
    ("1 1\na 1 2 3\na 1 b 2\n", r":2: expected 'name idx1 idx2' \(matched pair of fold 0\), got 4 fields"),
    ("1 1\na 1 2\na 1 b\n", r":3: expected 'name1 idx1 name2 idx2' \(mismatched pair of fold 0\), got 3"),
    ("1 1\na 0 2\na 1 b 2\n", r":2: image indices are 1-based"),
    ("2 1\na 1 2\na 1 b 2\n", r":3: file ends after 2 pair lines"),
    ("1 1\na 1 2\na 1 b 2\nc 1 2\n", r":4: surplus line"),
    ("", r"empty pairs file"),
])
def test_parse_errors_name_the_line(tmp_path, text, match):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        read_pairs(path)
    assert "\n" not in str(err.value)


def test_write_pairs_rejects_bad_layout(tmp_path):
    with pytest.raises(ValueError, match="fold 0 has 0 mismatched pairs"):
        write_pairs(tmp_path / "p.txt", [Pair("a", 1, "a", 2, True, 0)], folds=1, n=1)
    with pytest.raises(ValueError, match="whitespace"):
        write_pairs(tmp_path / "p.txt", [Pair("a b", 1, "a b", 2, True, 0), Pair("a b", 1, "c", 1, False, 0)], 1, 1)


def test_val_far_by_hand():
    """Pairs: same at D = 0.2, 0.5; different at D = 0.4, 0.9.
    d = 0.45: TA = {0.2} -> VAL 1/2; FA = {0.4} -> FAR 1/2.
    d = 0.5:  TA = {0.2, 0.5} (D <= d is inclusive) -> VAL 1; FA = {0.4} -> FAR 1/2.
    d = 0.1: nothing accepted -> 0, 0.  d = 1: everything -> 1, 1."""
    dist, same = [0.2, 0.5, 0.4, 0.9], [True, True, False, False]
    assert calculate_val_far(0.45, dist, same) == (0.5, 0.5)
    assert calculate_val_far(0.5, dist, same) == (1.0, 0.5)
    assert calculate_val_far(0.1, dist, same) == (0.0, 0.0)
    assert calculate_val_far(1.0, dist, same) == (1.0, 1.0)


# Two folds. Fold 0: same D = 1, 3; different 5, 7. Fold 1: same 2, 6; different 4, 8.
DIST = np.array([1, 3, 5, 7, 2, 6, 4, 8], dtype=float)
SAME = np.array([1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
FOLDS = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_kfold_accuracy_by_hand():
    """Held-out fold 0, train on fold 1 (2S 4D 6S 8D). Candidates and train accuracy:
    below 2 -> 2/4, 3 -> 3/4, 5 -> 2/4, 7 -> 3/4, 8 -> 2/4; tie 3 vs 7 goes to the smaller, 3.
    Fold 0 at 3: 1S yes, 3S yes (inclusive), 5D no, 7D no -> accuracy 1.
    Held-out fold 1, train on fold 0 (1S 3S 5D 7D): midpoint 4 separates perfectly.
    Fold 1 at 4: 2S right, 6S wrong, 4D wrong (accepted), 8D right -> 1/2.
    Mean 0.75, population std 0.25."""
    result = kfold_accuracy(DIST, SAME, FOLDS)
    assert result.mean == 0.75 and result.std == 0.25
    np.testing.assert_array_equal(result.thresholds, [3.0, 4.0])
    np.testing.assert_array_equal(result.fold_accuracies, [1.0, 0.5])
    assert kfold_accuracy(DIST, SAME, 2).mean == 0.75  # int folds: contiguous blocks


def test_kfold_accuracy_separable_is_perfect():
    rng = np.random.default_rng(0)
    dist = np.concatenate([rng.uniform(0, 1, 300), rng.uniform(2, 3, 300)])
    same = np.arange(600) < 300
    folds = rng.integers(0, 10, 600)
    result = kfold_accuracy(dist, same, folds)
    assert result.mean == 1.0 and result.std == 0.0
    assert np.all((result.thresholds > 0.9) & (result.thresholds < 2.1))


def test_best_threshold_by_hand():
    """Same at 1, 3; different at 5, 7: the midpoint of the gap, 4, classifies all four right."""
    assert best_threshold([1, 3, 5, 7], [1, 1, 0, 0]) == (4.0, 1.0)


def test_val_at_far_by_hand():
    """Fold 0: same 1, 3; diff 2, 6. Fold 1: same 1, 5; diff 4, 8. Target FAR 0.25.
    Test fold 0: train diffs 4, 8 -> knots (FAR 0, t 0), (0.5, 4), (1, 8) -> t = 2.
      VAL = |{1}|/2 = 0.5, FAR = |{2}|/2 = 0.5.
    Test fold 1: train diffs 2, 6 -> knots (0, 0), (0.5, 2), (1, 6) -> t = 1.
      VAL = |{1}|/2 = 0.5, FAR = 0.
    VAL 0.5 +- 0, FAR 0.25 +- 0.25."""
    dist = np.array([1, 3, 2, 6, 1, 5, 4, 8], dtype=float)
    result = val_at_far(dist, SAME, FOLDS, far_target=0.25)
    np.testing.assert_allclose(result.thresholds, [2.0, 1.0])
    assert (result.val, result.val_std, result.far, result.far_std) == (0.5, 0.0, 0.25, 0.25)


def test_threshold_at_far_unresolvable_and_resolvable():
    # 2 different pairs cannot resolve FAR 1e-3: interpolate from threshold 0 towards D = 4.
    assert threshold_at_far([4.0, 8.0, 1.0], [0, 0, 1], 1e-3) == pytest.approx(4.0 * 1e-3 * 2)
    assert threshold_at_far([1.0], [1], 1e-3) == 0.0
    # 9000 different pairs resolve it: the train FAR at the threshold is the target (9 of 9000).
    diff = np.random.default_rng(1).uniform(0, 2, 9000)
    t = threshold_at_far(diff, np.zeros(9000, bool), 1e-3)
    assert calculate_val_far(t, diff, np.zeros(9000, bool))[1] == pytest.approx(1e-3, abs=1 / 9000)


def test_roc_and_auc_match_sklearn():
    rng = np.random.default_rng(2)
    same = rng.random(400) < 0.4
    dist = np.round(rng.normal(np.where(same, 0.8, 1.2), 0.3), 2)  # rounding makes ties
    fpr, tpr, thresholds = roc(dist, same)
    sk_fpr, sk_tpr, sk_thr = roc_curve(same, -dist, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], -sk_thr[1:])
    assert roc_auc(dist, same) == pytest.approx(roc_auc_score(same, -dist), abs=1e-12)


def test_eer_by_hand():
    """Same 1, 2, 4; different 3. ROC knots (fpr, tpr): (0,0) (0,1/3) (0,2/3) (1,2/3) (1,1).
    fpr + tpr = 1 on the segment (0,2/3)-(1,2/3) at fpr = 1/3, where FRR = 1 - 2/3 = 1/3."""
    assert equal_error_rate([1, 2, 4, 3], [1, 1, 1, 0]) == pytest.approx(1 / 3)
    # Same 1, 3; different 2, 4: the curve passes through (0.5, 0.5) exactly.
    assert equal_error_rate([1, 3, 2, 4], [1, 1, 0, 0]) == 0.5


def test_eer_matches_sklearn_curve():
    rng = np.random.default_rng(3)
    same = rng.random(1000) < 0.5
    dist = rng.normal(np.where(same, 0.9, 1.3), 0.25)
    fpr, tpr, _ = roc_curve(same, -dist, drop_intermediate=False)
    k = np.argmin(np.abs((1 - tpr) - fpr))
    expected = (fpr[k] + 1 - tpr[k]) / 2
    assert equal_error_rate(dist, same) == pytest.approx(expected, abs=1 / min(same.sum(), (~same).sum()))


def test_evaluate_pairs_yields_report():
    rng = np.random.default_rng(4)
    same = np.tile(np.repeat([True, False], 30), 10)
    dist = rng.normal(np.where(same, 0.8, 1.4), 0.2)
    report = list(evaluate_pairs(dist, same, np.repeat(np.arange(10), 60)))
    assert [name for name, _ in report] == ["accuracy", "accuracy_std", "val", "val_std", "far", "auc",
                                            "eer", "best_threshold"]
    values = dict(report)
    assert all(np.isfinite(v) for v in values.values())
    assert values["accuracy"] > 0.9 and values["auc"] > 0.95 and values["eer"] < 0.1
