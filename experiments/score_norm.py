"""Cohort score normalisation (Z-, T- and AS-norm) against the plain distance, for one-shot open-set
identification on a run's held-out people.

    python -m experiments.score_norm runs/<run> [--teacher dlib_resnet_v1] [--top-k 100] [--fars 0.01 0.05 0.1]

Why: the enrolment service accepts a query when its nearest enrolled face lies within one global τ.
Speaker and face verification often normalise each score by how the two faces score against a
*cohort* of other people (Z-norm: the enrolled face's cohort scores; T-norm: the query's; AS-norm:
the mean of both over each side's ``--top-k`` closest cohort faces), so that one threshold fits every
person better. This measures whether it would raise the share of enrolled people's photos named
at an equal share of strangers accepted, before anything of it enters the product.

Protocol (experiments/closed_set.py's split): the split's identities alternate between enrolled (one
photo each: their first) and strangers; probes are the enrolled people's photos from the sixth on and
every stranger photo. The cohort is ``--cohort-shards`` training identities' photos (never a
validation or test person). Per method: rank-1, and at each stranger FAR its DIR (probes of enrolled
people accepted *and* named right) twice: with the threshold set on the validation split's same
protocol (what a deployment could do) and with the test split's own (a threshold-free comparison).
``--teacher`` scores the cached embeddings of a teacher (trainer/teacher.py) instead of the run's model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from experiments import results_file
import trainer  # noqa: F401  (tf-keras before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "score_norm.json"
METHODS = ("plain", "z-norm", "t-norm", "as-norm")


def cohort_stats(vectors, cohort, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each row's cosine to its ``top_k`` closest cohort faces (all when 0)."""
    scores = vectors @ cohort.T
    if top_k:
        scores = -np.sort(-scores, axis=1)[:, :top_k]
    return scores.mean(axis=1), scores.std(axis=1) + 1e-6


def normalised_scores(gallery, probes, cohort, method: str, top_k: int) -> np.ndarray:
    """(probes, gallery) similarity after ``method`` (higher: more alike)."""
    scores = probes @ gallery.T
    if method == "plain":
        return scores
    g_mean, g_std = cohort_stats(gallery, cohort, top_k)
    p_mean, p_std = cohort_stats(probes, cohort, top_k)
    z = (scores - g_mean[None]) / g_std[None]
    t = (scores - p_mean[:, None]) / p_std[:, None]
    return {"z-norm": z, "t-norm": t, "as-norm": 0.5 * (z + t)}[method]


def one_shot(embeddings, identities, sources, cohort, method: str, top_k: int) -> dict:
    """Each probe's best score, whether its best match is the right person, whether it is enrolled."""
    from experiments.closed_set import probe_rows, split_identities

    enrolled, strangers = split_identities(identities, sources)
    names = np.asarray(list(enrolled), dtype=object)
    gallery = embeddings[[rows[0] for rows in enrolled.values()]]
    probes_at = probe_rows(enrolled, strangers)
    truth = np.asarray(identities, dtype=object)[probes_at]
    scores = normalised_scores(gallery, embeddings[probes_at], cohort, method, top_k)
    best = scores.argmax(axis=1)
    return {"score": scores[np.arange(len(best)), best], "right": names[best] == truth,
            "known": np.isin(truth, names), "people": len(names)}


def at_far(case: dict, threshold: float) -> tuple[float, float]:
    """(DIR, stranger FAR) when a probe is accepted at ``score >= threshold`` (closed_set.open_set's figures)."""
    from experiments.closed_set import open_set

    figures = open_set(case["score"] >= threshold, case["right"], case["known"])
    return figures["dir"], figures["far"]


def threshold_for(case: dict, far: float) -> float:
    """The score above which a ``far`` share of the strangers' probes lies."""
    return float(np.quantile(case["score"][~case["known"]], 1.0 - far))


def embeddings_of(run_dir: str, teacher: str, cohort_shards: int):
    """{split: (embeddings, identities, sources)} for val, test and the training cohort."""
    from trainer.checkpoints import load_run
    from trainer.evaluate import embed_shards
    from trainer.run_plan import RunPlan

    if teacher:  # its embeddings are cached beside the shards: the run's plan is needed, not its model
        embedder, plan = teacher, RunPlan.load(run_dir)
    else:
        embedder, _, plan = load_run(run_dir)
    picked = np.random.default_rng(0).permutation(len(plan.shards.train))[:cohort_shards]
    splits = {"val": plan.shards.val, "test": plan.shards.test, "cohort": [plan.shards.train[i] for i in picked]}
    out = {}
    for split, shards in splits.items():
        vectors, identities, sources = embed_shards(embedder, shards, plan.image_size)
        out[split] = (np.asarray(vectors, dtype=np.float64), identities, sources)
    return out


def measure(run_dir: str, teacher: str, top_k: int, fars: list[float], cohort_shards: int) -> dict:
    data = embeddings_of(run_dir, teacher, cohort_shards)
    cohort = data["cohort"][0]
    rows = []
    for method in METHODS:
        val = one_shot(*data["val"], cohort, method, top_k)
        test = one_shot(*data["test"], cohort, method, top_k)
        row = {"method": method, "rank1": float(test["right"][test["known"]].mean()), "at": {}}
        for far in fars:
            dir_val, far_val = at_far(test, threshold_for(val, far))
            row["at"][str(far)] = {"dir_val_threshold": dir_val, "far_val_threshold": far_val,
                                   "dir_test_threshold": at_far(test, threshold_for(test, far))[0]}
        rows.append(row)
    # who is enrolled and probed does not depend on the method: the last case's counts hold for every row
    return {"run": run_dir, "embedder": teacher or "run", "top_k": top_k, "cohort_photos": len(cohort),
            "enrolled_people": test["people"], "known_probes": int(test["known"].sum()),
            "stranger_probes": int((~test["known"]).sum()), "rows": rows}


def table(result: dict) -> str:
    fars = list(result["rows"][0]["at"])
    lines = [f"{result['embedder']} embeddings of {result['run']}: {result['enrolled_people']} people enrolled from one "
             f"photo, {result['known_probes']} of their photos and {result['stranger_probes']} strangers' photos "
             f"probed; cohort {result['cohort_photos']} training photos, top {result['top_k']}", "",
             "| method | rank-1 | " + " | ".join(f"DIR / FAR at FAR {f} (validation's τ) | DIR at FAR {f} (test's τ)"
                                                  for f in fars) + " |",
             "| --- | ---: |" + " ---: | ---: |" * len(fars)]
    for row in result["rows"]:
        cells = [f"{a['dir_val_threshold']:.3f} / {a['far_val_threshold']:.3f} | {a['dir_test_threshold']:.3f}"
                 for a in (row["at"][f] for f in fars)]
        lines.append(f"| {row['method']} | {row['rank1']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished training run (runs/<name>): its splits, and its model unless --teacher")
    parser.add_argument("--teacher", default="", help="score this teacher's cached embeddings instead (dlib_resnet_v1)")
    parser.add_argument("--top-k", type=int, default=100, help="closest cohort faces per side (0: the whole cohort)")
    parser.add_argument("--fars", type=float, nargs="+", default=[0.01, 0.05, 0.1], help="strangers' accept rates")
    parser.add_argument("--cohort-shards", type=int, default=120, help="training identities in the cohort")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not all(0 < far < 1 for far in args.fars) or args.top_k < 0 or args.cohort_shards < 1:
        print("error: --fars must lie in (0, 1), --top-k >= 0 and --cohort-shards >= 1", file=sys.stderr)
        return 2
    return results_file.measure_and_publish(
        "score_norm", argv, args.out,
        lambda: measure(args.run, args.teacher, args.top_k, args.fars, args.cohort_shards), table)


if __name__ == "__main__":
    sys.exit(main())
