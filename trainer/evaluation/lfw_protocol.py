"""LFW pair-verification protocol: the ``pairs.txt`` format and the metrics computed on it.

Every metric takes ``dist`` (one distance per pair, smaller = more alike) and ``same`` (True for a
matched pair). A pair is *accepted* as "same person" at threshold ``d`` when ``dist <= d``, the
FaceNet paper's convention (Schroff et al. 2015, sec. 5.1), used everywhere here so that
thresholds returned by one function mean the same thing in every other.
"""
from __future__ import annotations

import warnings
from typing import Iterator, NamedTuple, Sequence

import numpy as np


class Pair(NamedTuple):
    """One verification pair. Indices are 1-based image numbers (LFW's ``<name>_<idx:04d>.jpg``);
    ``fold`` is the 0-based fold the pair belongs to."""

    left_name: str
    left_index: int
    right_name: str
    right_index: int
    same: bool
    fold: int


def read_pairs(path) -> list[Pair]:
    """Parse LFW's ``pairs.txt``: header ``"<folds> <n>"`` (a lone ``"<n>"`` as in pairsDevTrain.txt
    means one fold), then per fold ``n`` lines ``name idx1 idx2`` followed by ``n`` lines
    ``name1 idx1 name2 idx2``. Position decides match/fold, so a line with the wrong field count
    is an error (``ValueError`` naming ``path:line``), as are missing or surplus lines."""
    with open(path, encoding="utf-8") as f:
        lines = [(no, line.split()) for no, line in enumerate(f, 1) if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty pairs file (expected a '<folds> <n>' header)")
    header_no, header = lines[0]
    try:
        folds, n = (1, int(header[0])) if len(header) == 1 else map(int, header)
    except ValueError:
        raise ValueError(f"{path}:{header_no}: expected header '<folds> <n>', "
                         f"got {' '.join(header)!r}") from None
    if folds < 1 or n < 0:
        raise ValueError(f"{path}:{header_no}: header needs folds >= 1 and n >= 0, got {folds} {n}")
    body, expected_lines = lines[1:], folds * 2 * n
    if len(body) < expected_lines:
        raise ValueError(f"{path}:{lines[-1][0]}: file ends after {len(body)} pair lines, "
                         f"header promises {folds} folds x 2 x {n} = {expected_lines}")
    if len(body) > expected_lines:
        raise ValueError(f"{path}:{body[expected_lines][0]}: surplus line, header promises "
                         f"{folds} folds x 2 x {n} = {expected_lines} pair lines")
    pairs = []
    for k, (no, fields) in enumerate(body):
        fold, same = k // (2 * n), k % (2 * n) < n
        if len(fields) != (3 if same else 4):
            form = "'name idx1 idx2' (matched" if same else "'name1 idx1 name2 idx2' (mismatched"
            raise ValueError(f"{path}:{no}: expected {form} pair of fold {fold}), "
                             f"got {len(fields)} fields")
        left, right = (fields[:2], [fields[0], fields[2]]) if same else (fields[:2], fields[2:])
        try:
            li, ri = int(left[1]), int(right[1])
        except ValueError:
            raise ValueError(f"{path}:{no}: image indices must be integers: {' '.join(fields)!r}") from None
        if li < 1 or ri < 1:
            raise ValueError(f"{path}:{no}: image indices are 1-based, got {li} and {ri}")
        pairs.append(Pair(left[0], li, right[0], ri, same, fold))
    return pairs


def write_pairs(path, pairs: Sequence[Pair], folds: int, n: int) -> None:
    """Write ``pairs`` in LFW layout; each fold must hold exactly ``n`` matched and ``n``
    mismatched pairs (order inside each group is kept). Names may not contain whitespace."""
    lines = [f"{folds}\t{n}"]
    for fold in range(folds):
        for same in (True, False):
            group = [p for p in pairs if p.fold == fold and bool(p.same) == same]
            if len(group) != n:
                kind = "matched" if same else "mismatched"
                raise ValueError(f"fold {fold} has {len(group)} {kind} pairs, the layout needs {n}")
            for p in group:
                if any(not name or name.split() != [name] for name in (p.left_name, p.right_name)):
                    raise ValueError("identity names must be non-empty and free of whitespace: "
                                     f"{p.left_name!r}, {p.right_name!r}")
                if same and p.left_name != p.right_name:
                    raise ValueError(f"matched pair joins two identities: {p}")
                cols = [p.left_name, p.left_index, p.right_index] if same else list(p[:4])
                lines.append("\t".join(map(str, cols)))
    if len(lines) != 1 + folds * 2 * n:
        raise ValueError(f"{len(pairs)} pairs given, only {len(lines) - 1} fit {folds} folds x 2 x {n}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _as_arrays(dist, same):
    dist, same = np.asarray(dist, dtype=np.float64).ravel(), np.asarray(same, dtype=bool).ravel()
    if dist.shape != same.shape:
        raise ValueError(f"dist has {dist.size} entries but same has {same.size}")
    return dist, same


def _fold_ids(folds, size: int) -> np.ndarray:
    # An int means LFW's own layout: contiguous, equally sized blocks in file order.
    ids = np.arange(size) * folds // max(size, 1) if np.isscalar(folds) else np.asarray(folds).ravel()
    if ids.shape != (size,) or np.unique(ids).size < 2:
        raise ValueError("folds must give one fold id per pair and at least two distinct folds")
    return ids


def calculate_val_far(threshold: float, dist, same) -> tuple[float, float]:
    """FaceNet's validation rate and false accept rate at threshold ``d``:
    ``VAL(d) = |TA(d)| / |P_same|`` and ``FAR(d) = |FA(d)| / |P_diff|`` where
    ``TA(d) = {(i, j) in P_same : D(x_i, x_j) <= d}`` and ``FA(d) = {(i, j) in P_diff : D <= d}``.
    An empty ``P_same`` (``P_diff``) gives ``nan`` for VAL (FAR)."""
    dist, same = _as_arrays(dist, same)
    accept = dist <= threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.float64(np.sum(accept & same)) / np.sum(same)
        far = np.float64(np.sum(accept & ~same)) / np.sum(~same)
    return float(val), float(far)


def _candidate_thresholds(dist) -> np.ndarray:
    """Thresholds realising every distinct accept/reject split of ``dist``: just below the minimum
    (reject all), midpoints between consecutive distinct distances (the max-margin point of each
    interval over which predictions are constant) and the maximum (accept all)."""
    u = np.unique(dist)
    return np.concatenate([[np.nextafter(u[0], -np.inf)], (u[:-1] + u[1:]) / 2, [u[-1]]])


def _accuracy_at(candidates, dist, same) -> np.ndarray:
    same_sorted, diff_sorted = np.sort(dist[same]), np.sort(dist[~same])
    true_accepts = np.searchsorted(same_sorted, candidates, side="right")
    false_accepts = np.searchsorted(diff_sorted, candidates, side="right")
    return (true_accepts + diff_sorted.size - false_accepts) / dist.size


def best_threshold(dist, same) -> tuple[float, float]:
    """``(threshold, accuracy)`` maximising accuracy over all pairs. The search is exact: every
    distinct split is tried (see ``_candidate_thresholds``); ties go to the smallest threshold."""
    dist, same = _as_arrays(dist, same)
    candidates = _candidate_thresholds(dist)
    acc = _accuracy_at(candidates, dist, same)
    best = int(np.argmax(acc))
    return float(candidates[best]), float(acc[best])


class KFoldAccuracy(NamedTuple):
    mean: float
    std: float  # population std (ddof=0) over folds, as in davidsandberg/facenet
    thresholds: np.ndarray  # threshold used on each held-out fold, in sorted fold-id order
    fold_accuracies: np.ndarray


def kfold_accuracy(dist, same, folds) -> KFoldAccuracy:
    """LFW's 10-fold protocol: for each fold, pick the threshold with the best accuracy on the
    other folds (``best_threshold``, exact) and score the held-out fold with it. ``folds`` is a
    fold id per pair, or an int k for k contiguous blocks (``pairs.txt`` order)."""
    dist, same = _as_arrays(dist, same)
    ids = _fold_ids(folds, dist.size)
    thresholds, accuracies = [], []
    for fold in np.unique(ids):
        test = ids == fold
        threshold, _ = best_threshold(dist[~test], same[~test])
        thresholds.append(threshold)
        accuracies.append(np.mean((dist[test] <= threshold) == same[test]))
    acc = np.asarray(accuracies)
    return KFoldAccuracy(float(acc.mean()), float(acc.std()), np.asarray(thresholds), acc)


def threshold_at_far(dist, same, far_target: float) -> float:
    """Threshold whose FAR on these pairs is ``far_target``, by linear interpolation of the
    threshold through the knots ``(FAR(u), u)`` for each distinct different-pair distance ``u``,
    anchored at ``(0, 0)``: threshold 0 accepts nothing when distances are positive.

    FAR moves in steps of ``1/|P_diff|``; with fewer than ``1/far_target`` different pairs (under
    1000 for 1e-3) the target lies below the first step and the result interpolates between 0 and
    the smallest different-pair distance, i.e. the target is not resolvable and the threshold is
    a conservative guess. With no different pairs at all the threshold is 0."""
    dist, same = _as_arrays(dist, same)
    diff = np.sort(dist[~same])
    if diff.size == 0:
        return 0.0
    u = np.unique(diff)
    far = np.searchsorted(diff, u, side="right") / diff.size
    anchor = min(0.0, np.nextafter(u[0], -np.inf))  # stays below u[0] even for negative distances
    return float(np.interp(far_target, np.concatenate([[0.0], far]), np.concatenate([[anchor], u])))


class ValAtFar(NamedTuple):
    val: float
    val_std: float
    far: float
    far_std: float
    thresholds: np.ndarray


def val_at_far(dist, same, folds, far_target: float = 1e-3) -> ValAtFar:
    """VAL at a fixed FAR as in davidsandberg/facenet's ``calculate_val``: per fold, choose the
    threshold giving ``far_target`` on the training folds (``threshold_at_far``), then report VAL
    and FAR of the held-out fold at it; means and population stds over folds."""
    dist, same = _as_arrays(dist, same)
    ids = _fold_ids(folds, dist.size)
    thresholds, vals, fars = [], [], []
    for fold in np.unique(ids):
        test = ids == fold
        threshold = threshold_at_far(dist[~test], same[~test], far_target)
        val, far = calculate_val_far(threshold, dist[test], same[test])
        thresholds.append(threshold)
        vals.append(val)
        fars.append(far)
    return ValAtFar(float(np.mean(vals)), float(np.std(vals)), float(np.mean(fars)), float(np.std(fars)),
                    np.asarray(thresholds))


def roc(dist, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: one point per distinct distance in ascending order, preceded
    by ``(0, 0)`` at threshold ``-inf``: ``sklearn.metrics.roc_curve(same, -dist,
    drop_intermediate=False)`` with negated thresholds (a score is a negated distance). With pairs of
    one kind only, the other kind's rate is 0 (sklearn's is undefined, nan)."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_curve

    dist, same = _as_arrays(dist, same)
    if dist.size == 0:  # (sklearn refuses) no pairs: only the curve's start
        return np.zeros(1), np.zeros(1), np.array([-np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # one kind only: handled below
        fpr, tpr, thresholds = roc_curve(same, -dist, drop_intermediate=False)
    return np.nan_to_num(fpr), np.nan_to_num(tpr), -thresholds


def roc_auc(dist, same) -> float:
    """Area under the ROC: the probability that a random matched pair is closer than a random
    mismatched one, ties counting half (``sklearn.metrics.roc_auc_score``); 0 with pairs of one
    kind only, where no such probability exists (the area under ``roc``'s flat curve)."""
    from sklearn.metrics import roc_auc_score

    dist, same = _as_arrays(dist, same)
    if same.all() or not same.any():  # sklearn refuses a single class
        return 0.0
    return float(roc_auc_score(same, -dist))


def equal_error_rate(dist, same) -> float:
    """EER: the rate at which FAR equals FRR = 1 - TPR on the piecewise-linear ROC, i.e. where the
    polyline crosses ``fpr + tpr = 1`` (davidsandberg solves the same equation with brentq)."""
    fpr, tpr, _ = roc(dist, same)
    h = fpr + tpr - 1.0  # non-decreasing from -1 to 1 along the curve
    k = int(np.searchsorted(h, 0.0, side="left"))
    if k == h.size:  # no matched or no mismatched pairs: the curve never reaches FAR = FRR
        return float("nan")
    if h[k] == 0.0 or k == 0:
        return float(fpr[k])
    s = -h[k - 1] / (h[k] - h[k - 1])
    return float(fpr[k - 1] + s * (fpr[k] - fpr[k - 1]))


def evaluate_pairs(dist, same, folds, far_target: float = 1e-3) -> Iterator[tuple[str, float]]:
    """Yield the LFW report as ``(name, value)``: 10-fold accuracy and std, VAL@FAR (mean, std)
    and the FAR actually reached, AUC, EER, and the best single threshold over all pairs."""
    acc = kfold_accuracy(dist, same, folds)
    yield "accuracy", acc.mean
    yield "accuracy_std", acc.std
    val = val_at_far(dist, same, folds, far_target)
    yield "val", val.val
    yield "val_std", val.val_std
    yield "far", val.far
    yield "auc", roc_auc(dist, same)
    yield "eer", equal_error_rate(dist, same)
    yield "best_threshold", best_threshold(dist, same)[0]
