"""Evaluate an embedding model on a split of identities: LFW-protocol verification + one-shot rank-1.

    python -m trainer.evaluate RUN_DIR [--split test]
    python -m trainer.evaluate RUN_DIR --pairs PAIRS.txt --images DIR [--name NAME]

The second form scores the run on any benchmark in LFW's ``pairs.txt`` format (LFW itself, or the
cross-dataset pairs in experiments/benchmarks/) into ``RUN_DIR/eval-<name>/``; see
``trainer.evaluation.benchmark``.

Verification pairs are generated for the split exactly like LFW's ``pairs.txt`` (10 folds,
matched and mismatched pairs, identities disjoint across folds) and written next to the results,
so the figures can be recomputed from the file. Identification is one-shot: each identity's first
photo is the gallery, its other photos are probes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from trainer.evaluation import identification, lfw_protocol, pairs as pairs_lib


def embed(model, dataset) -> tuple[np.ndarray, list[str], list[str]]:
    """Embeddings, identity names and source paths for every record of an ``ordered_images`` dataset."""
    embeddings, identities, sources = [], [], []
    for batch in dataset:
        embeddings.append(model(batch["image"], training=False).numpy())
        identities += [s.decode() for s in batch["identity"].numpy()]
        sources += [s.decode() for s in batch["source"].numpy()]
    dim = model.output_shape[-1]
    return (np.concatenate(embeddings) if embeddings else np.zeros((0, dim), np.float32)), identities, sources


def verification(embeddings, identities, sources, folds=10, pairs_per_fold=300, far_target=1e-3, seed=0,
                 pairs_path: str | Path | None = None):
    """LFW-protocol metrics ``{name: value}`` plus the pair distances and same/different flags."""
    by_identity: dict[str, list[str]] = {}
    for name, source in zip(identities, sources):
        by_identity.setdefault(name, []).append(source)
    pairs = pairs_lib.make_pairs(by_identity, folds=folds, pairs_per_fold=pairs_per_fold, seed=seed)
    if not pairs:
        raise ValueError("too few identities/images to form verification pairs")
    if pairs_path:
        lfw_protocol.write_pairs(pairs_path, pairs, folds, len(pairs) // (2 * folds))
    row = {source: i for i, source in enumerate(sources)}
    left, right = zip(*[(row[a], row[b]) for a, b in pairs_lib.resolve_pair_paths(pairs, by_identity)])
    dist = np.linalg.norm(embeddings[list(left)] - embeddings[list(right)], axis=1)
    same = np.array([p.same for p in pairs])
    fold_ids = np.array([p.fold for p in pairs])
    metrics = dict(lfw_protocol.evaluate_pairs(dist, same, fold_ids, far_target))
    metrics["pairs"] = float(len(pairs))
    return metrics, dist, same


def one_shot_split(identities) -> tuple[list[int], list[int]]:
    """(gallery, probes) row indices: each identity's first photo is its only gallery entry, every
    other photo a probe."""
    first: dict[str, int] = {}
    for i, name in enumerate(identities):
        first.setdefault(name, i)
    gallery = sorted(first.values())
    enrolled = set(gallery)
    return gallery, [i for i in range(len(identities)) if i not in enrolled]


def one_shot_identification(embeddings, identities, threshold: float) -> dict[str, float]:
    """Rank-1 and open-set figures with the first photo of each identity as its only gallery entry."""
    gallery, probes = one_shot_split(identities)
    if not probes:
        return {}
    labels = np.array(identities)
    return dict(identification.evaluate_identification(
        embeddings[gallery], labels[gallery], embeddings[probes], labels[probes], threshold))


def embed_shards(embedder, shards: list[str], size: int, batch_size: int = 128):
    """``embed`` over every record of ``shards``; ``embedder`` is a Keras model, or a teacher's name
    (trainer/teacher.py), whose embeddings prepare cached beside the shards."""
    from trainer import pipeline

    dataset = pipeline.ordered_images(shards, size, batch_size)
    if not isinstance(embedder, str):
        return embed(embedder, dataset)
    from trainer.teacher_cache import cached_embeddings

    vectors, _ = cached_embeddings(shards, embedder)
    identities, sources = [], []
    for batch in dataset:
        identities += [s.decode() for s in batch["identity"].numpy()]
        sources += [s.decode() for s in batch["source"].numpy()]
    return vectors, identities, sources


def evaluate_split(model, dataset, eval_cfg, seed: int = 0, out_dir: str | Path | None = None, plots: bool = False):
    """Verification (+ one-shot identification) report for a split; PNG plots when ``plots``."""
    return evaluate_embeddings(*embed(model, dataset), eval_cfg, seed, out_dir, plots)


def evaluate_embeddings(embeddings, identities, sources, eval_cfg, seed: int = 0, out_dir: str | Path | None = None,
                        plots: bool = False):
    """``evaluate_split`` on embeddings already computed (by a model or a teacher)."""
    out = Path(out_dir) if out_dir else None
    metrics, dist, same = verification(embeddings, identities, sources, eval_cfg.folds, eval_cfg.pairs_per_fold,
                                       eval_cfg.far_target, seed, out / "pairs.txt" if out else None)
    metrics.update({f"oneshot_{k}": v for k, v in
                    one_shot_identification(embeddings, identities, metrics["best_threshold"]).items()})
    if plots and out:
        from trainer.evaluation import plots as plot_lib

        fpr, tpr, _ = lfw_protocol.roc(dist, same)
        plot_lib.plot_roc(fpr, tpr, out / "roc.png", label=f"AUC {metrics['auc']:.3f}")
        plot_lib.plot_distance_histogram(dist, same, out / "distances.png", threshold=metrics["best_threshold"])
    return metrics


def main(argv: list[str] | None = None) -> int:
    from trainer import checkpoints, cliargs

    parser = cliargs.ArgumentParser(description="Evaluate a trained run on one of its identity splits, "
                                                "or on a benchmark in LFW's pairs.txt format.")
    parser.add_argument("run_dir")
    parser.add_argument("--split", choices=("train", "val", "test"), help="identity split (default: test)")
    parser.add_argument("--pairs", help="benchmark pairs file in LFW's pairs.txt format")
    parser.add_argument("--images", help="the benchmark's photos: DIR/<name>/<photo> (with --pairs)")
    parser.add_argument("--name", help="benchmark name (default: the pairs file's stem or folder)")
    parser.add_argument("--teacher", choices=("dlib_resnet_v1",),
                        help="evaluate this teacher (the [teacher] extra) instead of the run's model, on the same pairs")
    parser.add_argument("--numbering", choices=("auto", "lfw", "sorted"), default="auto",
                        help="what a pair's image index means: lfw (<name>_<nnnn>.jpg), sorted (the n-th file "
                             "of the folder, as trainer.evaluation.pairs writes) or auto (refuses when they differ)")
    args = parser.parse_args(argv)
    if args.pairs and args.split:
        parser.error("give either --split or --pairs, not both")
    if bool(args.pairs) != bool(args.images) or (args.name and not args.pairs):
        parser.error("--pairs and --images go together (and --name needs them)")
    try:
        model, cfg, plan = checkpoints.load_run(args.run_dir)
        if args.teacher:
            from trainer.teacher import check_teacher

            check_teacher(args.teacher)
            model = args.teacher
        if args.pairs:
            return _benchmark(model, cfg, plan, args)
        split = args.split or "test"
        out = Path(args.run_dir) / f"eval-{split}{'-' + args.teacher if args.teacher else ''}"
        out.mkdir(exist_ok=True)
        embedded = embed_shards(model, getattr(plan.shards, split), plan.image_size, cfg.eval.eval_batch_size)
    except (OSError, ValueError) as exc:
        print(f"error: {cliargs.one_line(exc)}", file=sys.stderr)
        return 2
    metrics = evaluate_embeddings(*embedded, cfg.eval, out_dir=out, plots=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    for name, value in metrics.items():
        print(f"{name:28s} {value:.4f}")
    return 0


def _benchmark(model, cfg, plan, args) -> int:
    from trainer.evaluation import benchmark

    name = benchmark.benchmark_name(args.pairs, args.name) + (f"-{args.teacher}" if args.teacher else "")
    out = Path(args.run_dir) / f"eval-{name}"
    metrics = benchmark.evaluate_benchmark(model, args.pairs, args.images, cfg.data.cache_dir, plan.image_size,
                                           cfg.eval.far_target, out, cfg.eval.eval_batch_size, args.numbering,
                                           cfg.ray.address, progress=True, template=plan.face_template)
    tracked = benchmark.log_to_run(plan, name, metrics, out)
    print(benchmark.format_table(name, metrics))
    print(f"report: {out}" + (f" (logged to MLflow run {plan.mlflow_run_id})" if tracked else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
