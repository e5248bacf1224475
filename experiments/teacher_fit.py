"""How far a distilled student is from its teacher, and which loss term pulls hardest.

    nice -n 10 python -m experiments.teacher_fit runs/<distilled run> [--train-every 4] [--batches 6]
                                                 [--out experiments/results/teacher_fit.json]

For the run's kept checkpoint:
- per split (train: every ``--train-every``-th training person; validation; test), the cosine between
  the student's inference embedding of each aligned crop (mirror-averaged when the run is) and the
  teacher's cached embedding of the same photo: mean, median and 10th percentile. A student that
  is as far from the teacher on its training photos as on unseen people under-fits; one that is
  much closer on them over-fits.
- the teacher's agreement with itself on a photo and its mirror image (the same caches): how
  close a target can be met at all.
- on ``--batches`` training P×K batches (augmented, as training sees them), each loss term the run
  trains with, unweighted, with the norm of its gradient over the network's weights, alone and
  times its weight: the term with the largest weighted norm is the one steering training.
Writes JSON and a markdown table beside it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from experiments import results_file

RESULTS = Path(__file__).resolve().parent / "results" / "teacher_fit.json"


def cosine_summary(cosines: np.ndarray) -> dict:
    """Mean, median and 10th percentile of per-photo cosines (empty: zeros, with n = 0)."""
    if not len(cosines):
        return {"n": 0, "mean": 0.0, "median": 0.0, "p10": 0.0}
    return {"n": int(len(cosines)), "mean": float(np.mean(cosines)), "median": float(np.median(cosines)),
            "p10": float(np.percentile(cosines, 10))}


def split_cosines(model, shards: list[str], image_size: int, teacher: str) -> dict:
    """``cosine_summary`` of student against teacher over every photo of ``shards`` the teacher embedded."""
    from trainer.evaluate import embed_shards
    from trainer.teacher_cache import cached_embeddings

    student, _, _ = embed_shards(model, shards, image_size)
    targets, ok = cached_embeddings(shards, teacher)
    targets = targets / np.maximum(np.linalg.norm(targets, axis=1, keepdims=True), 1e-12)
    return cosine_summary(np.sum(student * targets, axis=1)[ok])


def mirror_agreement(shards: list[str], teacher: str) -> dict:
    """``cosine_summary`` of the teacher's embedding of each photo against that of its mirror image."""
    from trainer.teacher_cache import read_teacher, teacher_path

    cosines = []
    for shard in shards:
        both, ok = read_teacher(teacher_path(shard, teacher))
        unit = both / np.maximum(np.linalg.norm(both, axis=2, keepdims=True), 1e-12)
        cosines.append(np.sum(unit[:, 0] * unit[:, 1], axis=1)[ok])
    return cosine_summary(np.concatenate(cosines) if cosines else np.zeros(0))


def term_gradients(network, cfg, plan, batches: int) -> dict:
    """{term: {weight, value, grad_norm, weighted_grad_norm}} averaged over ``batches`` training batches,
    for the terms the run trained with, computed as its train step computes them."""
    import tensorflow as tf

    from trainer.pipeline import pk_batches
    from trainer.train_step import loss_terms, metric_loss, term_weights
    from trainer.worker import _margin_head

    t = cfg.train
    head = _margin_head(t, plan.shards.train, cfg.model.embedding_dim)
    weights, loss_fn = term_weights(t, head), metric_loss(t)
    data = pk_batches(plan.shards.train, list(range(len(plan.shards.train))), t.identities_per_batch,
                      t.images_per_identity, plan.image_size, teacher=t.teacher, seed=t.seed)
    sums = {name: np.zeros(2) for name in weights}
    for images, labels, targets, mask in data.take(batches):
        with tf.GradientTape(persistent=True) as tape:
            embeddings = network(images, training=True)
            terms = loss_terms(weights, loss_fn, head, t.centre_distill_scale, embeddings, labels, (targets, mask))
        for name, (_, value) in terms.items():
            gradients = [g for g in tape.gradient(value, network.trainable_variables) if g is not None]
            sums[name] += (float(value), float(tf.linalg.global_norm(gradients)))
    return {name: {"weight": weights[name], "value": total[0] / batches, "grad_norm": total[1] / batches,
                   "weighted_grad_norm": weights[name] * total[1] / batches} for name, total in sums.items()}


def measure(run: str, train_every: int, batches: int) -> dict:
    from trainer import checkpoints
    from trainer.models.mirror import network_of

    model, cfg, plan = checkpoints.load_run(run)
    if not cfg.train.teacher:
        raise ValueError(f"{run} was not distilled (train.teacher is empty): there is no teacher to compare with")
    teacher = cfg.train.teacher
    splits = {"train": plan.shards.train[::max(1, train_every)], "val": plan.shards.val, "test": plan.shards.test}
    return {"run": str(run), "checkpoint": checkpoints.resolve_checkpoint(run).name, "teacher": teacher,
            "student_teacher_cosine": {name: split_cosines(model, shards, plan.image_size, teacher)
                                       for name, shards in splits.items() if shards},
            "teacher_mirror_agreement": mirror_agreement(splits["train"], teacher),
            "terms": term_gradients(network_of(model), cfg, plan, batches), "batches": batches}


def table(result: dict) -> str:
    lines = [f"`{result['command']}` ({result['checkpoint']}, teacher {result['teacher']})", "",
             "| photos | n | cosine to the teacher: mean | median | 10th percentile |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in result["student_teacher_cosine"].items():
        lines.append(f"| {name} | {row['n']} | {row['mean']:.3f} | {row['median']:.3f} | {row['p10']:.3f} |")
    mirror = result["teacher_mirror_agreement"]
    lines += [f"| the teacher, photo against its mirror image (train) | {mirror['n']} | {mirror['mean']:.3f} | "
              f"{mirror['median']:.3f} | {mirror['p10']:.3f} |", "",
              f"| term ({result['batches']} training batches) | weight | value | gradient norm | × weight |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in result["terms"].items():
        lines.append(f"| {name} | {row['weight']:g} | {row['value']:.4f} | {row['grad_norm']:.3f} | "
                     f"{row['weighted_grad_norm']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished distilled training run (runs/<name>)")
    parser.add_argument("--train-every", type=int, default=4, help="every N-th training person (1: all)")
    parser.add_argument("--batches", type=int, default=6, help="training batches for the loss terms")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    return results_file.measure_and_publish("teacher_fit", argv, args.out,
                                            lambda: measure(args.run, args.train_every, args.batches), table)


if __name__ == "__main__":
    sys.exit(main())
