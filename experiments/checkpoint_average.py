"""Checkpoint averaging (stochastic weight averaging, Izmailov et al. 2018) on a finished run.

    python -m experiments.checkpoint_average runs/<run> --epochs 14-23 [--epochs 18-23 ...]
        [--bn-batches 40] [--out experiments/results/checkpoint_average.json]

For each range of epochs: the mean of those checkpoints' weights, scored on the run's validation
split as it is and again after its batch-norm statistics are recomputed on the training photos
(``bn_batches`` batches of 64, a running mean over them: averaged weights do not match averaged
statistics). Each row beside the run's own best epoch, on the same pairs. The recipe question it
answers (does averaging the last epochs beat keeping the best one?) is decided on validation only.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from experiments import results_file
import trainer  # noqa: F401  (tf-keras before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "checkpoint_average.json"


def epoch_range(text: str) -> tuple[int, int]:
    """``"14-23"`` → (14, 23), epochs as the checkpoints number them (0-based)."""
    first, _, last = text.partition("-")
    try:
        span = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--epochs takes FIRST-LAST, e.g. 14-23, got {text!r}") from None
    if not 0 <= span[0] <= span[1]:
        raise argparse.ArgumentTypeError(f"--epochs needs 0 <= FIRST <= LAST, got {text!r}")
    return span


def average_weights(run_dir: str, model, first: int, last: int) -> None:
    """Load into ``model`` the mean of checkpoints ``first``..``last`` of ``run_dir``."""
    from trainer.checkpoints import checkpoint_dir, restore

    total = None
    for epoch in range(first, last + 1):
        restore(checkpoint_dir(run_dir, epoch), model)  # a missing epoch: FileNotFoundError naming it
        weights = [np.asarray(w, np.float64) for w in model.get_weights()]
        total = weights if total is None else [t + w for t, w in zip(total, weights)]
    model.set_weights([t / (last - first + 1) for t in total])


def recompute_batch_norm(model, shards: list[str], size: int, batches: int, seed: int = 0) -> int:
    """Every batch norm's moving statistics as the plain mean over ``batches`` shuffled training batches
    (fewer when the training photos run out); returns how many it saw."""
    import tensorflow as tf
    import tf_keras as keras

    from trainer import pipeline

    norms = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
    photos = pipeline.ordered_images(shards, size, 64).unbatch().shuffle(5000, seed=seed).batch(64)
    seen = 0
    for seen, batch in enumerate(photos.take(batches), start=1):
        for layer in norms:
            layer.momentum = (seen - 1) / seen  # batch i weighs 1/i: a running mean, not an exponential one
        model(batch["image"], training=True)
    return seen


def validation(model, cfg, plan) -> dict[str, float]:
    from trainer.evaluate import embed_shards, evaluate_embeddings
    from trainer.models.mirror import inference_model

    shipped = inference_model(model, cfg.model.mirror_average)
    metrics = evaluate_embeddings(*embed_shards(shipped, plan.shards.val, plan.image_size, cfg.eval.eval_batch_size),
                                  cfg.eval)
    return {k: metrics[k] for k in ("accuracy", "auc", "oneshot_rank1")}


def measure(run_dir: str, spans: list[tuple[int, int]], bn_batches: int) -> dict:
    from trainer.checkpoints import load_run, resolve_checkpoint
    from trainer.models.mirror import network_of

    shipped, cfg, plan = load_run(run_dir)
    model = network_of(shipped)  # the network itself: its weights are averaged, its batch norms recomputed
    rows = [{"weights": f"kept: {resolve_checkpoint(run_dir).name}", **validation(model, cfg, plan)}]
    for first, last in spans:
        average_weights(run_dir, model, first, last)
        rows.append({"weights": f"mean of epochs {first}-{last}", **validation(model, cfg, plan)})
        if bn_batches:
            recompute_batch_norm(model, plan.shards.train, plan.image_size, bn_batches)
            rows.append({"weights": f"mean of epochs {first}-{last}, batch norm recomputed",
                         **validation(model, cfg, plan)})
    return {"run": run_dir, "split": "val", "bn_batches": bn_batches, "rows": rows}


def table(result: dict) -> str:
    lines = [f"{result['run']}, validation split", "",
             "| weights | pair accuracy | AUC | one-shot rank-1 |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['weights']} | {r['accuracy']:.3f} | {r['auc']:.3f} | {r['oneshot_rank1']:.3f} |"
              for r in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--epochs", type=epoch_range, action="append", required=True,
                        help="a range of checkpoints to average, FIRST-LAST (0-based); repeatable")
    parser.add_argument("--bn-batches", type=int, default=40,
                        help="training batches to recompute batch-norm statistics over (0: keep the averaged ones)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.bn_batches < 0:
        parser.error(f"--bn-batches must be >= 0 (0: keep the averaged statistics), got {args.bn_batches}")
    return results_file.measure_and_publish(
        "checkpoint_average", argv, args.out,
        lambda: measure(args.run_dir, args.epochs, args.bn_batches), table)


if __name__ == "__main__":
    raise SystemExit(main())
