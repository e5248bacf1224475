"""Closed-set classifiers (nearest / KNN / linear SVM) and the Siamese verification head against the
plain distance, on a trained run's test identities.

    nice -n 15 python -m experiments.closed_set runs/<run> [--far-targets 1e-3 1e-2] [--out experiments/results/closed_set.json]

Identification: the run's test identities, sorted, alternate between *enrolled* (those with at least
``ENROL_MAX + 1`` photos) and *strangers*. Each enrolled person is enrolled with their first 1, 3 or 5
photos (sorted by file); the probes are the same for every count: enrolled people's photos from the
sixth on, and every stranger photo. Per method: rank-1 over enrolled people's probes (closed set),
and, at τ (calibrated on the run's validation pairs at each of ``--far-targets``, as ``enroll init`` does),
open-set accuracy over all probes (right name within τ, or "unknown" for a stranger), DIR and FAR;
fit time and latency per single query (the enroll code path: enroll.classifiers / enroll.index).

Verification: the test split's 10-fold pairs (trainer.evaluate's, seed 0); the head
(enroll.verification_head) is fitted on the run's training split, the network frozen, and
calibrated on its validation split; both scored by 10-fold accuracy, ROC AUC, EER and at their
operating points calibrated at each FAR. Writes JSON and a markdown table beside it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from experiments import results_file
import trainer  # noqa: F401  (tf-keras before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "closed_set.json"
ENROL_COUNTS = (1, 3, 5)
ENROL_MAX = max(ENROL_COUNTS)
LATENCY_QUERIES = 100


def calibrate_tau(embeddings, identities, sources, far_target: float, distance=None) -> float:
    """τ on validation pairs, as enroll.model_versions.calibrate: at the FAR when resolvable, else best
    accuracy. ``distance(left, right)``: per-pair distances of feature rows (default: L2), so
    experiments/comparison.py calibrates every method alike."""
    import math

    from enroll.verification_head import pair_rows
    from trainer.evaluation import lfw_protocol

    left, right, same, _ = pair_rows(identities, sources, 10, max(300, math.ceil(2 / (far_target * 10))))
    embeddings = np.asarray(embeddings)
    if distance is None:
        dist = np.linalg.norm(embeddings[left] - embeddings[right], axis=1)
    else:
        dist = distance(embeddings[left], embeddings[right])
    if (~same).sum() >= 1 / far_target:
        return lfw_protocol.threshold_at_far(dist, same, far_target)
    return lfw_protocol.best_threshold(dist, same)[0]


def split_identities(identities, sources):
    """{enrolled name: sorted rows}, stranger rows: sorted names alternate, enrolled ones need
    ENROL_MAX + 1 photos (the rest become strangers)."""
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(identities):
        rows.setdefault(name, []).append(i)
    enrolled, strangers = {}, []
    for k, name in enumerate(sorted(rows)):
        ordered = sorted(rows[name], key=lambda i: sources[i])
        if k % 2 == 0 and len(ordered) > ENROL_MAX:
            enrolled[name] = ordered
        else:
            strangers += ordered
    return enrolled, strangers


def probe_rows(enrolled: dict, strangers: list) -> list[int]:
    """The probes, the same for every enrolment count: enrolled people's photos after the first
    ENROL_MAX, then every stranger photo."""
    return [i for rows in enrolled.values() for i in rows[ENROL_MAX:]] + strangers


def nearest_predict(names, matrix, probes) -> np.ndarray:
    """Person of the nearest gallery face, per probe (what ``identify --method nearest`` answers)."""
    from trainer.evaluation.identification import nearest_neighbours

    return np.asarray(names, dtype=object)[nearest_neighbours(matrix, probes)[0]]


def single_query_seconds(method, names, matrix, classifier, probes, threshold) -> float:
    """Median seconds of one identify's search on one query, through the enroll code path."""
    from enroll.classifiers import answer
    from enroll.index import ExactIndex, top_people

    times = []
    for query in probes[:LATENCY_QUERIES]:
        start = time.perf_counter()
        if method == "nearest":
            top_people(ExactIndex().build(matrix, names), query, 3)
        else:
            answer(classifier, names, matrix, query, threshold, 3)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def open_set(accepted, right, known) -> dict:
    """Open-set figures at one τ (``accepted``: nearest enrolled face within τ)."""
    identified = accepted & right & known
    return {"accuracy": float((identified.sum() + (~accepted[~known]).sum()) / len(known)),
            "dir": float(identified.sum() / known.sum()), "far": float(accepted[~known].mean())}


def identification(embeddings, identities, sources, taus: dict) -> list[dict]:
    """A row per (enrolment photos, method): rank-1, open-set figures at each τ (``taus``: FAR -> τ),
    fit and single-query times."""
    from enroll.classifiers import Classifier
    from trainer.evaluation.identification import nearest_neighbours

    enrolled, strangers = split_identities(identities, sources)
    labels = np.asarray(identities, dtype=object)
    probes_at = probe_rows(enrolled, strangers)
    probes, truth = embeddings[probes_at], labels[probes_at]
    known = np.isin(truth, list(enrolled))
    out = []
    for count in ENROL_COUNTS:
        gallery_rows = [i for rows in enrolled.values() for i in rows[:count]]
        names, matrix = list(labels[gallery_rows]), embeddings[gallery_rows]
        nearest = nearest_neighbours(matrix, probes)[1]
        for method in ("nearest", "knn", "svm"):
            start = time.perf_counter()
            classifier = None if method == "nearest" else Classifier(method, names, matrix)
            fit = time.perf_counter() - start
            right = (nearest_predict(names, matrix, probes) if method == "nearest" else classifier.predict(probes)) == truth
            tau = next(iter(taus.values()))
            out.append({"photos": count, "method": method, "people": len(enrolled), "gallery_faces": len(names),
                        "known_probes": int(known.sum()), "stranger_probes": int((~known).sum()),
                        "rank1": float(right[known].mean()),
                        "open_set": {str(far): open_set(nearest <= t, right, known) for far, t in taus.items()},
                        "fit_ms": 1e3 * fit,
                        "query_ms": 1e3 * single_query_seconds(method, names, matrix, classifier, probes, tau)})
    return out


def verification(head: dict, embeddings, identities, sources, cuts: dict) -> dict:
    """Distance against head on the test split's 10-fold pairs; ``cuts``: FAR -> (τ, head threshold)."""
    from enroll.verification_head import pair_probability, pair_rows
    from trainer.evaluation import lfw_protocol

    left, right, same, folds = pair_rows(identities, sources, 10, 300)
    scores = {"distance": np.linalg.norm(embeddings[left] - embeddings[right], axis=1),
              "head": 1.0 - pair_probability(head, embeddings[left], embeddings[right])}  # 1 - P(same)
    out = {"pairs": int(len(same))}
    for k, (method, dist) in enumerate(scores.items()):
        kfold = lfw_protocol.kfold_accuracy(dist, same, folds)
        fpr, tpr, _ = lfw_protocol.roc(dist, same)
        at = {}
        for far, pair in cuts.items():
            cut = pair[0] if method == "distance" else 1.0 - pair[1]
            val, far_measured = lfw_protocol.calculate_val_far(cut, dist, same)
            at[str(far)] = {"accuracy": float(np.mean((dist <= cut) == same)), "val": val, "far": far_measured}
        out[method] = {"accuracy": kfold.mean, "accuracy_std": kfold.std, "auc": lfw_protocol.roc_auc(dist, same),
                       "eer": lfw_protocol.equal_error_rate(dist, same), "at_calibrated": at,
                       "roc_tpr_at_fpr": list(np.interp(np.linspace(0, 1, 101), fpr, tpr))}
    return out


def run(run_dir: str, fars: list[float]) -> dict:
    from enroll.verification_head import calibrate_head, fit_head, head_training_shards
    from trainer.checkpoints import load_run
    from trainer.evaluate import embed_shards

    started = time.time()
    model, _, plan = load_run(run_dir)
    size, shards = plan.image_size, plan.shards
    test = embed_shards(model, shards.test, size)
    val = embed_shards(model, shards.val, size)
    taus = {far: calibrate_tau(*val, far) for far in fars}
    head_start = time.time()
    head = fit_head(*embed_shards(model, head_training_shards(shards.train), size))
    head_seconds = time.time() - head_start
    heads = {far: calibrate_head(head, *val, far) for far in fars}
    return {"run": run_dir, "taus": {str(f): t for f, t in taus.items()},
            "head_thresholds": {str(f): h["threshold"] for f, h in heads.items()}, "test_images": len(test[1]),
            "identification": identification(*test, taus),
            "verification": verification(head, *test, {f: (taus[f], heads[f]["threshold"]) for f in fars}),
            "head": {"train_pairs": head["train_pairs"], "train_accuracy": head["train_accuracy"],
                     "train_shards": len(head_training_shards(shards.train)),
                     "seconds_incl_embedding": head_seconds},
            "seconds": time.time() - started}


def table(result: dict) -> str:
    fars = list(result["taus"])
    lines = ["τ: " + ", ".join(f"{result['taus'][f]:.4f} at FAR {f}" for f in fars) + "; head threshold P(same): "
             + ", ".join(f"{result['head_thresholds'][f]:.4f} at FAR {f}" for f in fars), "",
             "| enrolment photos | method | rank-1 | " + " | ".join(f"open-set accuracy / DIR / FAR @ τ({f})" for f in fars)
             + " | fit ms | query ms |", "| ---: | --- | ---: |" + " ---: |" * len(fars) + " ---: | ---: |"]
    for r in result["identification"]:
        cells = [f"{o['accuracy']:.3f} / {o['dir']:.3f} / {o['far']:.3f}" for o in (r["open_set"][f] for f in fars)]
        lines.append(f"| {r['photos']} | {r['method']} | {r['rank1']:.3f} | " + " | ".join(cells)
                     + f" | {r['fit_ms']:.1f} | {r['query_ms']:.2f} |")
    v = result["verification"]
    lines += ["", f"| verification ({v['pairs']} pairs) | 10-fold accuracy | ROC AUC | EER | "
              + " | ".join(f"accuracy / VAL / FAR at FAR {f} point" for f in fars) + " |",
              "| --- | ---: | ---: | ---: |" + " ---: |" * len(fars)]
    for method in ("distance", "head"):
        m = v[method]
        cells = [f"{a['accuracy']:.3f} / {a['val']:.3f} / {a['far']:.4f}" for a in (m["at_calibrated"][f] for f in fars)]
        lines.append(f"| {method} | {m['accuracy']:.3f} ± {m['accuracy_std']:.3f} | {m['auc']:.3f} | {m['eer']:.3f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished training run (runs/<name>)")
    parser.add_argument("--far-targets", type=float, nargs="+", default=[1e-3, 1e-2],
                        help="FARs at which τ and the head are calibrated (the home's default is 1e-3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not all(0 < far < 1 for far in args.far_targets):
        print(f"error: --far-targets must lie in (0, 1), got {args.far_targets}", file=sys.stderr)
        return 2
    return results_file.measure_and_publish("closed_set", argv, args.out, lambda: run(args.run, args.far_targets),
                                            table)


if __name__ == "__main__":
    sys.exit(main())
