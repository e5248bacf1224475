"""A Siamese verification head: logistic regression on |f(x1) − f(x2)|, ``enroll verify --method head``.

The embedding network f stays frozen. The head is fitted on matched and mismatched pairs of the
production model's source run's *training* split (up to ``HEAD_IDENTITIES`` identities, balanced
pairs), and its operating point is calibrated like τ: on the run's validation pairs (test pairs
if it has none) at the home's FAR, falling back to the best-accuracy point when the split has too
few different-person pairs for that FAR. The head is a linear model on the element-wise absolute
difference, so it learns which embedding dimensions matter for "same person" instead of weighing
them all alike as the L2 distance does.

It is trained automatically at the first ``verify --method head`` under a model version (tens of
seconds: the training and validation images are embedded once) and stored beside that version as
JSON coefficients (``enroll.home.verification_head_file``), never pickled; later calls load it.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np

from enroll.gallery import Conflict, GalleryError
from enroll.home import read_verification_head, verification_head_file, write_verification_head
from trainer.run_plan import RunPlan

HEAD_IDENTITIES = 100  # training identities embedded to fit the head (a subset of the split's shards)
HEAD_PAIRS = 4000  # matched pairs (and as many mismatched) to fit it on
HEAD_C = 1.0  # logistic regression's inverse L2 strength, on standardised features


def pair_rows(identities, sources, folds: int, pairs_per_fold: int, seed: int = 0):
    """(left rows, right rows, same, fold) of LFW-protocol pairs (trainer.evaluation.pairs) over
    embeddings listed by ``identities`` and ``sources``."""
    from trainer.evaluation import pairs as pairs_lib

    by_identity: dict[str, list[str]] = {}
    for name, source in zip(identities, sources):
        by_identity.setdefault(name, []).append(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "folds share identities" on small splits: fine here
        pairs = pairs_lib.make_pairs(by_identity, folds=folds, pairs_per_fold=pairs_per_fold, seed=seed)
    if not pairs:
        raise ValueError("too few identities/images to form verification pairs")
    row = {source: i for i, source in enumerate(sources)}
    left, right = zip(*[(row[a], row[b]) for a, b in pairs_lib.resolve_pair_paths(pairs, by_identity)])
    return (np.array(left), np.array(right), np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))


def fit_head(embeddings, identities, sources, pairs: int = HEAD_PAIRS, seed: int = 0) -> dict:
    """Logistic regression on |e1 − e2| of balanced training pairs; the standardisation is folded
    into the stored coefficients, so applying the head is one dot product."""
    from sklearn.linear_model import LogisticRegression

    left, right, same, _ = pair_rows(identities, sources, 1, pairs, seed)
    if same.all() or not same.any():
        raise ValueError("the training split gives only one kind of pair")
    x = np.abs(np.asarray(embeddings, np.float64)[left] - np.asarray(embeddings, np.float64)[right])
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-8)
    lr = LogisticRegression(C=HEAD_C, max_iter=2000).fit((x - mean) / scale, same)
    coef = lr.coef_[0] / scale
    intercept = float(lr.intercept_[0] - np.sum(lr.coef_[0] * mean / scale))
    head = {"coef": [float(c) for c in coef], "intercept": intercept, "train_pairs": int(len(same))}
    head["train_accuracy"] = float(np.mean((probability(head, x) >= 0.5) == same))
    return head


def probability(head: dict, diff) -> np.ndarray:
    """P(same person) for rows of |e1 − e2| (``diff``)."""
    z = np.asarray(diff, np.float64) @ np.asarray(head["coef"], np.float64) + head["intercept"]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def pair_probability(head: dict, a, b) -> np.ndarray:
    return probability(head, np.abs(np.atleast_2d(np.asarray(a, np.float64)) - np.asarray(b, np.float64)))


def calibrate_head(head: dict, embeddings, identities, sources, far_target: float, folds: int = 10,
                   pairs_per_fold: int = 300) -> dict:
    """The head's probability threshold at ``far_target`` on these (validation) pairs, as τ is
    calibrated (enroll.model_versions.calibrate): best accuracy when the FAR is not resolvable."""
    from trainer.evaluation import lfw_protocol

    per_fold = max(pairs_per_fold, math.ceil(2 / (far_target * folds)))
    left, right, same, _ = pair_rows(identities, sources, folds, per_fold)
    dist = 1.0 - pair_probability(head, np.asarray(embeddings)[left], np.asarray(embeddings)[right])
    different = int((~same).sum())
    if different >= 1 / far_target:
        cut, method = lfw_protocol.threshold_at_far(dist, same, far_target), "far"
    else:
        cut, method = lfw_protocol.best_threshold(dist, same)[0], "best_accuracy"
    return {"threshold": float(1.0 - cut), "threshold_method": method, "far_target": far_target,
            "calibration_pairs": int(len(same)), "different_pairs": different}


def head_training_shards(train_shards) -> list[str]:
    """Up to ``HEAD_IDENTITIES`` of a training split's shards, spread evenly over its sorted list."""
    train = sorted(train_shards)
    return train[::max(1, len(train) // HEAD_IDENTITIES)][:HEAD_IDENTITIES]


def train_for_run(model, run_dir, far_target: float) -> dict:
    """Fit and calibrate a head for ``model`` (frozen) on the training run ``run_dir``'s splits."""
    from trainer.evaluate import embed_shards

    try:
        plan = RunPlan.load(run_dir)
    except (OSError, ValueError) as exc:
        raise GalleryError(f"cannot train the verification head on run {run_dir}: {type(exc).__name__}: {exc}") from None
    train, held, size = head_training_shards(plan.shards.train), plan.shards.val or plan.shards.test, plan.image_size
    if len(train) < 2 or not held:
        raise GalleryError(f"cannot train the verification head on run {run_dir}: it needs training and "
                           "validation identities")
    started = time.time()
    try:
        head = fit_head(*embed_shards(model, train, size))
        head.update(calibrate_head(head, *embed_shards(model, held, size), far_target))
    except ValueError as exc:
        raise GalleryError(f"cannot train the verification head on run {run_dir}: {exc}") from None
    return {**head, "source_run": str(run_dir), "train_shards": len(train),
            "seconds": round(time.time() - started, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _usable(head, dim: int) -> bool:
    try:
        return (len(head["coef"]) == dim and np.isfinite(head["coef"]).all() and math.isfinite(head["intercept"])
                and 0.0 <= head["threshold"] <= 1.0)
    except (KeyError, TypeError, ValueError):
        return False


def head_for(home, version: int, meta: dict, model) -> tuple[dict, bool]:
    """(model ``version``'s head, whether it was trained just now): loaded, else trained on the
    version's source run and stored beside it (an unreadable file is replaced)."""
    try:
        head = read_verification_head(home, version)
    except (OSError, ValueError):
        head = None
    if head is not None and _usable(head, int(meta["embedding_dim"])):
        return head, False
    head = train_for_run(model, meta["source_run"], float(meta["far_target"]))
    head["model_version"] = int(version)
    write_verification_head(home, version, head)
    return head, True


def verify_head(gallery, home, path, name: str, embedder=None) -> dict:
    """``service.verify`` answered by the head: match when P(same) of the query and the person's
    most probable face reaches the head's calibrated threshold. (Training the head at its first use
    needs the production model in this process, whatever ``embedder`` embeds the query.)"""
    from enroll.model_versions import production
    from enroll.service import _box, person_and_query

    name, query, faces = person_and_query(gallery, home, path, name, embedder)
    version, meta = query.version, query.meta
    current, _, model = production(home)
    if current != version:
        raise Conflict(f"the production model changed from version {version} to {current} meanwhile; try again")
    head, trained = head_for(home, version, meta, model)
    p = float(np.max(pair_probability(head, faces, query.embedding)))
    return {"source": str(path), "name": name, "match": p >= head["threshold"], "method": "head",
            "probability": p, "probability_threshold": head["threshold"],
            "distance": float(np.min(np.linalg.norm(faces - query.embedding, axis=1))), "threshold": meta["threshold"],
            "model_version": version, "note": query.note, "box": _box(query),
            "head": {"trained_now": trained, "file": str(verification_head_file(home, version)),
                     "train_pairs": head["train_pairs"], "threshold_method": head["threshold_method"]}}
