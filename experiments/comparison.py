"""Every method, one table: the triplet network (nearest face, KNN, SVM, Siamese head, TFLite float16
and int8) against Eigenfaces, Fisherfaces and LBP histograms, on the same aligned crops and splits
of one trained run.

    nice -n 10 python -m experiments.comparison runs/<run> [--far-targets 1e-3 1e-2] [--latency-queries 50]
                                                [--tflite float16 int8] [--threads T]
                                                [--out experiments/results/comparison.json]

Crops: the run's own TFRecord shards at its image size (what its network saw). The baselines and the
Siamese head are fitted on the same training crops: the 100 training identities that
enroll.verification_head.head_training_shards picks. Every method's τ is calibrated on the
validation pairs at each FAR with its own distance (closed_set.calibrate_tau, as ``enroll init``).

* Verification: the test split's LFW-protocol pairs as trainer.evaluate makes them (the run's
  ``eval.folds`` × ``eval.pairs_per_fold``, seed 0), scored by trainer.evaluation.lfw_protocol.
* Identification: experiments/closed_set.py's protocol (sorted test identities alternate between
  enrolled and strangers; the first 1 or 5 photos enrolled; the same probes for both): rank-1
  over enrolled people's probes, and at τ open-set accuracy, DIR and the strangers' acceptance
  rate. KNN and SVM rows are closed_set.identification's: they decide who, the network's τ decides
  whether anyone. Verification is not theirs to score.
* Latency per query: featurising one crop (batch 1) plus the search of the 5-photo gallery
  (KNN/SVM: enroll.classifiers.answer), over the first N probe crops, on this CPU: the median, and
  the fastest query, which is what the work costs when the process is not kept waiting for a core
  (the median reads the machine's load as much as the method on a shared machine).

Writes the JSON (experiments/results_file.py) and the markdown table beside it, and prints the table.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments import closed_set, comparison_methods as methods, results_file
from experiments.comparison_methods import Crops, Method

RESULTS = Path(__file__).resolve().parent / "results" / "comparison.json"
PHOTOS = (1, 5)
BASELINES = ("eigenfaces", "fisherfaces", "lbp")
QUANTIZATIONS = ("float16", "int8")


def load_crops(plan) -> tuple[Crops, Crops, Crops]:
    """(train, val, test) crops; refused before the slow work when the protocol cannot run."""
    from enroll.verification_head import head_training_shards
    from experiments.edge_export import shard_images

    shards = plan.shards
    if not shards.val or not shards.test:
        raise ValueError("the run needs validation and test identities (τ is calibrated on validation pairs)")
    test = Crops(*shard_images(shards.test, plan.image_size))
    enrolled, _ = closed_set.split_identities(test.identities, test.sources)
    if len(enrolled) < 2:
        raise ValueError(f"KNN and SVM need at least 2 people enrolled; the test split has {len(enrolled)} "
                         f"with more than {closed_set.ENROL_MAX} photos")
    train_shards = head_training_shards(shards.train)
    if len(train_shards) < 2:
        raise ValueError(f"the baselines and the head need at least 2 training identities, the run has "
                         f"{len(train_shards)}")
    size = plan.image_size
    return Crops(*shard_images(train_shards, size)), Crops(*shard_images(shards.val, size)), test


def verification(method: Method, test: Crops, eval_cfg) -> dict:
    """trainer.evaluate's LFW report on the test pairs, from the method's distances."""
    from enroll.verification_head import pair_rows
    from trainer.evaluation import lfw_protocol

    left, right, same, folds = pair_rows(test.identities, test.sources, eval_cfg.folds, eval_cfg.pairs_per_fold)
    dist = method.pair_distance(method.test[left], method.test[right])
    return {**dict(lfw_protocol.evaluate_pairs(dist, same, folds, eval_cfg.far_target)), "pairs": int(len(same))}


def galleries(test: Crops) -> tuple[dict, list[int], np.ndarray]:
    """({photos: gallery rows}, probe rows, whether each probe's person is enrolled): closed_set's protocol."""
    enrolled, strangers = closed_set.split_identities(test.identities, test.sources)
    probes = closed_set.probe_rows(enrolled, strangers)
    known = np.isin(np.asarray(test.identities, dtype=object)[probes], list(enrolled))
    return {n: [i for rows in enrolled.values() for i in rows[:n]] for n in PHOTOS}, probes, known


def identification(method: Method, test: Crops, taus: dict) -> dict:
    """{photos: rank-1 and open-set figures at each τ} by the method's nearest gallery face."""
    gallery_rows, probes, known = galleries(test)
    labels = np.asarray(test.identities, dtype=object)
    out = {}
    for photos, rows in gallery_rows.items():
        dist = method.cross_distance(method.test[probes], method.test[rows])
        right = labels[rows][dist.argmin(axis=1)] == labels[probes]
        nearest = dist.min(axis=1)
        out[str(photos)] = {"rank1": float(right[known].mean()), "people": len(rows) // photos,
                            "open_set": {str(far): closed_set.open_set(nearest <= tau, right, known)
                                         for far, tau in taus.items()}}
    return out


def query_ms(featurise, search, crops: np.ndarray) -> dict:
    """{median, fastest} ms of featurising one crop and searching with it (after one untimed warm-up)."""
    search(featurise(crops[:1])[0])
    times = []
    for crop in crops:
        start = time.perf_counter()
        search(featurise(crop[None])[0])
        times.append(time.perf_counter() - start)
    return {"median": 1e3 * float(np.median(times)), "fastest": 1e3 * float(np.min(times))}


def score(method: Method, val: Crops, test: Crops, fars: list[float], eval_cfg, queries: int) -> dict:
    """The method's row: τ per FAR, verification, identification with 1 and 5 photos, query latency."""
    taus = {far: closed_set.calibrate_tau(method.val, val.identities, val.sources, far, method.pair_distance)
            for far in fars}
    rows, probes, _ = galleries(test)
    gallery = method.test[rows[max(PHOTOS)]]
    latency = query_ms(method.featurise, lambda q: int(np.argmin(method.cross_distance(q, gallery))),
                       test.images[probes[:queries]])
    return {"method": method.name, "kind": method.kind, "features": method.features, "fit_s": method.fit_s,
            "taus": {str(f): t for f, t in taus.items()}, "verification": verification(method, test, eval_cfg),
            "identification": identification(method, test, taus), "query_ms": latency["median"],
            "query_ms_fastest": latency["fastest"], **method.detail}


def classifier_rows(network: dict, net: Method, val: Crops, test: Crops, queries: int) -> list[dict]:
    """KNN and SVM on the network's embeddings: closed_set.identification's figures at the network's
    τ, timed through enroll.classifiers.answer."""
    from enroll.classifiers import Classifier, answer

    taus = {float(f): t for f, t in network["taus"].items()}
    found = closed_set.identification(net.test, test.identities, test.sources, taus)
    rows, probes, _ = galleries(test)
    names, gallery = list(np.asarray(test.identities, dtype=object)[rows[max(PHOTOS)]]), net.test[rows[max(PHOTOS)]]
    out = []
    for kind in ("knn", "svm"):
        mine = {str(r["photos"]): r for r in found if r["method"] == kind and r["photos"] in PHOTOS}
        classifier, tau = Classifier(kind, names, gallery), next(iter(taus.values()))
        latency = query_ms(net.featurise, lambda q: answer(classifier, names, gallery, q, tau, 1),
                           test.images[probes[:queries]])
        out.append({"method": f"triplet network + {kind.upper()}", "kind": "deep", "features": net.features,
                    "fit_s": mine[str(max(PHOTOS))]["fit_ms"] / 1e3, "taus": network["taus"], "verification": None,
                    "identification": {n: {"rank1": r["rank1"], "people": r["people"], "open_set": r["open_set"]}
                                       for n, r in mine.items()}, "query_ms": latency["median"],
                    "query_ms_fastest": latency["fastest"]})
    return out


def build_methods(model, run_dir, plan, crops, threads: int, scratch: Path, quantizations=QUANTIZATIONS):
    """Yield each Method as it is ready (the network first: the head and KNN/SVM reuse it)."""
    from serving.tflite import representative_crops

    train, val, test = crops
    net = methods.network(model, val, test)
    yield net
    yield methods.head(net, net.featurise(train.images), train)
    representative = representative_crops(run_dir, plan.image_size) if quantizations else None
    for quantize in quantizations:
        yield methods.tflite(model, quantize, representative, scratch, threads, val, test)
    for name in BASELINES:
        yield methods.baseline(name, train, val, test)


def run(run_dir: str, fars: list[float], queries: int = 50, threads: int | None = None,
        quantizations=QUANTIZATIONS) -> dict:
    from trainer.checkpoints import load_run

    started, threads = time.time(), threads or os.cpu_count() or 1
    model, cfg, plan = load_run(run_dir)
    crops = load_crops(plan)
    scratch = Path(tempfile.mkdtemp(prefix="comparison-"))
    rows = []
    try:
        for method in build_methods(model, run_dir, plan, crops, threads, scratch, quantizations):
            rows.append(score(method, crops[1], crops[2], fars, cfg.eval, queries))
            if len(rows) == 1:
                rows += classifier_rows(rows[0], method, crops[1], crops[2], queries)
            print(f"{method.name}: done at {time.time() - started:.0f} s", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    train, val, test = crops
    return {"run": str(run_dir), "architecture": model.name, "image_size": plan.image_size, "far_targets": fars,
            "train_crops": len(train.images), "train_identities": len(set(train.identities)),
            "val_crops": len(val.images), "test_crops": len(test.images), "test_identities": len(set(test.identities)),
            "probes": len(galleries(test)[1]), "latency_queries": queries, "threads": threads,
            "load_average": os.getloadavg(), "rows": rows, "seconds": time.time() - started}


def table(result: dict) -> str:
    fars = [str(f) for f in result["far_targets"]]
    lines = ["| method | features | verification accuracy (10-fold) | AUC | rank-1, 1 photo | rank-1, 5 photos | "
             + " | ".join(f"open-set accuracy / DIR / FAR at τ(FAR {f}), 5 photos" for f in fars)
             + " | ms / query: median (fastest) |", "| --- | ---: |" + " ---: |" * (5 + len(fars))]
    for r in result["rows"]:
        v, ident = r["verification"], r["identification"]
        cells = [f"{o['accuracy']:.3f} / {o['dir']:.3f} / {o['far']:.3f}"
                 for o in (ident["5"]["open_set"][f] for f in fars)]
        verify = f"{v['accuracy']:.3f} ± {v['accuracy_std']:.3f} | {v['auc']:.3f}" if v else "— | —"
        lines.append(f"| {r['method']} | {r['features']} | {verify} | {ident['1']['rank1']:.3f} | "
                     f"{ident['5']['rank1']:.3f} | " + " | ".join(cells)
                     + f" | {r['query_ms']:.1f} ({r['query_ms_fastest']:.1f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from enroll.gallery import GalleryError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished training run (runs/<name>)")
    parser.add_argument("--far-targets", type=float, nargs="+", default=[1e-3, 1e-2],
                        help="FARs at which each method's τ is calibrated on the validation pairs")
    parser.add_argument("--latency-queries", type=int, default=50, help="timed single queries per method")
    parser.add_argument("--tflite", nargs="*", choices=QUANTIZATIONS, default=list(QUANTIZATIONS),
                        help="TFLite conversions to compare (none: --tflite alone)")
    parser.add_argument("--threads", type=int, help="TFLite interpreter threads (default: every core)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not all(0 < far < 1 for far in args.far_targets) or args.latency_queries < 1:
        print(f"error: --far-targets must lie in (0, 1) and --latency-queries be positive, got "
              f"{args.far_targets} and {args.latency_queries}", file=sys.stderr)
        return 2
    try:
        result = run(args.run, args.far_targets, args.latency_queries, args.threads, args.tflite)
    except (OSError, ValueError, KeyError, GalleryError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    result["command"] = results_file.command("comparison", argv)
    note = (f"{result['architecture']} at {result['image_size']} px; {result['test_crops']} test crops of "
            f"{result['test_identities']} identities, {result['probes']} probes; baselines and head fitted on "
            f"{result['train_crops']} crops of {result['train_identities']} training identities; "
            f"load average {result['load_average'][0]:.1f}")
    results_file.save(args.out, result, f"`{result['command']}`: {note}\n\n{table(result)}")
    print(table(result))
    print(note)
    print(f"written: {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
