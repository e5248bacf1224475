"""Clustering labelled folders without their labels: ``enroll cluster``'s methods measured.

    nice -n 10 python -m experiments.clustering runs/<run> [--data ../shared/data] [--far-targets 1e-3 1e-2]
        [--max-per-identity 100] [--out experiments/results/clustering.json]

A run's model embeds three labelled sets, and each method of enroll/clustering.py groups them at τ,
calibrated as ``enroll init`` does (enroll.model_versions.calibrate: the run's validation pairs at each
FAR; ``enroll cluster`` uses the home's, 1e-3 by default), and at the validation pairs' best-accuracy
threshold, the looser cut dlib's face clustering makes (0.6 for its own model): pairwise precision, recall and F-measure (scikit-learn's ``pair_confusion_matrix``: a pair of
faces is a positive when both are in one group), the adjusted Rand index, clusters found against true
identities, and the seconds the grouping took (embedding excluded).

- ``celeba299-test``: the run's test identities (its plan owns the split), as the run aligned them.
- ``glint6-unseen``: glint6 photos the run did not train on. Its config may list glint6 as a training
  source with ``max_per_identity`` N: then only the photos after the first N (sorted) of each person,
  so the people were seen in training but not these photos. Aligned like that source (MTCNN, a
  resize where none is found), in this process.
- ``yaleb27``: every photo, aligned as the run's benchmark was (``detect_or_resize``, in this process); and
  ``yaleb27-detected``, the photos MTCNN found a face in, which is all ``enroll cluster`` would see.

``--max-per-identity`` caps the photos of each person (first N sorted) to bound the time.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from experiments import results_file
import trainer  # noqa: F401  (tf-keras before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "clustering.json"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class LabelledSet:
    name: str
    embeddings: np.ndarray  # (n, d), L2-normalised
    identities: list[str]
    note: str


@dataclass
class Row:
    data: str
    tau_at: str  # where τ was calibrated: "FAR 0.001", or "best accuracy"
    threshold: float
    method: str
    implementation: str
    faces: int
    identities: int
    clusters: int
    singletons: int
    precision: float
    recall: float
    f_measure: float
    adjusted_rand: float
    seconds: float


def pairwise_scores(truth, labels) -> tuple[float, float, float]:
    """Pairwise precision, recall and F-measure from scikit-learn's pair confusion matrix."""
    from sklearn.metrics.cluster import pair_confusion_matrix

    (_, false_pos), (false_neg, true_pos) = pair_confusion_matrix(truth, labels)
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 1.0
    f_measure = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f_measure)


def measure(labelled: LabelledSet, tau_at: str, threshold: float) -> list[Row]:
    from sklearn.metrics import adjusted_rand_score

    from enroll.clustering import METHODS, cluster, implementation

    rows = []
    for method in METHODS:
        start = time.perf_counter()
        labels = cluster(labelled.embeddings, threshold, method)
        seconds = time.perf_counter() - start
        sizes = np.bincount(labels)
        rows.append(Row(labelled.name, tau_at, threshold, method, implementation(method), len(labels),
                        len(set(labelled.identities)), len(sizes), int((sizes == 1).sum()),
                        *pairwise_scores(labelled.identities, labels),
                        float(adjusted_rand_score(labelled.identities, labels)), seconds))
    return rows


def first_per_identity(identities, sources, cap: int) -> list[int]:
    """Rows of the first ``cap`` photos (sorted by file) of each identity; all rows when ``cap`` is 0."""
    from collections import Counter

    taken: Counter = Counter()
    keep = []
    for i in sorted(range(len(identities)), key=lambda i: (identities[i], sources[i])):
        if not cap or taken[identities[i]] < cap:
            keep.append(i)
            taken[identities[i]] += 1
    return keep


def celeba_test(model, plan, cap: int) -> LabelledSet:
    from trainer.evaluate import embed_shards

    embeddings, identities, sources = embed_shards(model, plan.shards.test, plan.image_size)
    keep = first_per_identity(identities, sources, cap)
    return LabelledSet("celeba299-test", embeddings[keep], [identities[i] for i in keep],
                       "the run's test identities (never trained on)")


def embed_folder(model, root: Path, size: int, align, skip: int, cap: int):
    """(embeddings, identities, statuses) of each person's photos after the first ``skip`` (sorted),
    ``cap`` at most, aligned by ``trainer.identity_shard.align_identity`` in this process (``align``
    as trainer.prepare takes it) into temporary shards; statuses as its summaries give them."""
    from trainer.evaluate import embed_shards
    from trainer.evaluation.pairs import identity_folders
    from trainer.identity_shard import align_identity

    with tempfile.TemporaryDirectory() as tmp:
        shards, status = [], {}
        for k, (name, files) in enumerate(sorted(identity_folders(root).items())):
            chosen = files[skip:][:cap or None]
            if chosen:
                shards.append(f"{tmp}/{k}.tfrecord")
                summary = align_identity(name, chosen, shards[-1], size, align)
                status.update({e["source"]: e["status"] for e in summary["images"]})
        embeddings, identities, sources = embed_shards(model, shards, size)
    return embeddings, identities, [status[s] for s in sources]


def glint_unseen(model, cfg, plan, root: Path, cap: int) -> LabelledSet:
    """Photos after the first ``max_per_identity`` the run trained on, aligned as that source was."""
    from trainer.plan import ALIGN_MODES

    source = next((s for s in cfg.data.sources if Path(s.path).resolve() == root.resolve()), None)
    skip = source.max_per_identity if source else 0
    if source and not skip:
        raise ValueError(f"the run trained on every photo of {root}: no unseen photos to cluster")
    embeddings, identities, _ = embed_folder(model, root, plan.image_size,
                                             ALIGN_MODES[source.align] if source else "prealigned", skip, cap)
    note = (f"photos after the first {skip} of each person, which the run trained on" if source
            else "people the run never saw")
    return LabelledSet("glint6-unseen", embeddings, identities, note)


def yaleb(model, plan, root: Path, cap: int) -> list[LabelledSet]:
    """Every photo, aligned as the run's benchmarks are (a centre crop where MTCNN finds no face), and
    the detected ones alone."""
    from trainer.evaluation.benchmark import ALIGN_MODE

    embeddings, identities, statuses = embed_folder(model, root, plan.image_size, ALIGN_MODE, 0, cap)
    detected = [i for i, s in enumerate(statuses) if s in ("ok", "several_faces")]
    return [LabelledSet("yaleb27", embeddings, identities, f"every photo; {len(statuses) - len(detected)} of "
                        f"{len(statuses)} are centre crops of photos MTCNN found no face in"),
            LabelledSet("yaleb27-detected", embeddings[detected], [identities[i] for i in detected],
                        "the photos MTCNN found a face in: what `enroll cluster` sees")]


def run(run_dir: str, data: Path, fars: list[float], cap: int) -> dict:
    from enroll.model_versions import calibrate
    from trainer.checkpoints import load_run

    started = time.time()
    model, cfg, plan = load_run(run_dir)
    calibrations = {far: calibrate(model, cfg, plan, far) for far in fars}
    taus = {f"FAR {far:g}": c["threshold"] for far, c in calibrations.items()}
    taus["best accuracy"] = calibrations[fars[0]]["best_accuracy_threshold"]
    sets = [celeba_test(model, plan, cap), glint_unseen(model, cfg, plan, data / "glint6", cap),
            *yaleb(model, plan, data / "yaleb27", cap)]
    rows = [asdict(r) for s in sets for at, tau in taus.items() for r in measure(s, at, tau)]
    return {"run": run_dir, "taus": taus, "calibration_split": calibrations[fars[0]]["split"], "max_per_identity": cap,
            "sets": {s.name: {"faces": len(s.identities), "identities": len(set(s.identities)), "note": s.note}
                     for s in sets},
            "rows": rows, "seconds": time.time() - started}


def table(result: dict) -> str:
    lines = ["| data (faces / people) | τ (calibrated at) | method | clusters | singletons | pairwise precision | recall | F | ARI | seconds |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['data']} ({r['faces']} / {r['identities']}) | {r['threshold']:.3f} ({r['tau_at']}) | "
                     f"{r['method']} | {r['clusters']} | {r['singletons']} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['f_measure']:.3f} | {r['adjusted_rand']:.3f} | {r['seconds']:.3f} |")
    return "\n".join(lines + [""] + [f"- {name}: {s['note']}" for name, s in result["sets"].items()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished training run (runs/<name>)")
    parser.add_argument("--data", type=Path, default=DATA, help="the folder holding glint6/ and yaleb27/")
    parser.add_argument("--far-targets", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--max-per-identity", type=int, default=100, help="photos per person at most (0 = all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not all(0 < far < 1 for far in args.far_targets) or args.max_per_identity < 0:
        print("error: --far-targets must lie in (0, 1) and --max-per-identity be >= 0", file=sys.stderr)
        return 2
    return results_file.measure_and_publish(
        "clustering", argv, args.out, lambda: run(args.run, args.data, args.far_targets, args.max_per_identity), table)


if __name__ == "__main__":
    sys.exit(main())
