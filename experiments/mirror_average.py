"""Plain against mirror-averaged embeddings (``model.mirror_average``), on the same trained runs.

    python -m experiments.mirror_average runs/<run> [runs/<run> ...] [--out experiments/results/mirror_average.json]

For each run: its kept weights, embedded once as the plain network f(x) and once as
normalise(f(x) + f(mirror x)) (trainer/models/mirror.py), scored on the run's validation split
(10-fold pair accuracy, one-shot rank-1) and on every benchmark in its config's ``eval.benchmarks``.
The choice of the default was made on these figures (validation and cross-dataset benchmarks; never
the test split). Writes one JSON with a row per run and prints a table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments import results_file
import trainer  # noqa: F401  (tf-keras before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "mirror_average.json"


def score(model, cfg, plan) -> dict[str, float]:
    """Validation accuracy and rank-1, and each configured benchmark's accuracy, of one model."""
    from trainer import pipeline
    from trainer.evaluate import embed, evaluate_embeddings
    from trainer.evaluation.benchmark import benchmark_name, evaluate_benchmark

    data = pipeline.ordered_images(plan.shards.val, plan.image_size, cfg.eval.eval_batch_size)
    val = evaluate_embeddings(*embed(model, data), cfg.eval)
    figures = {"val_accuracy": val["accuracy"], "val_oneshot_rank1": val.get("oneshot_rank1", float("nan"))}
    for bench in cfg.eval.benchmarks:
        metrics = evaluate_benchmark(model, bench.pairs, bench.images, cfg.data.cache_dir, plan.image_size,
                                     numbering=bench.numbering, ray_address=cfg.ray.address,
                                     template=plan.face_template)
        figures[benchmark_name(bench.pairs, bench.name)] = metrics["accuracy"]
    return figures


def compare_run(run_dir: str) -> dict:
    from trainer.checkpoints import load_run
    from trainer.models.mirror import network_of, with_mirror_average

    model, cfg, plan = load_run(run_dir)
    network = network_of(model)
    plain, averaged = score(network, cfg, plan), score(with_mirror_average(network), cfg, plan)
    return {"run": run_dir, "plain": plain, "mirror_average": averaged}


def table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row["plain"]))  # runs may have other benchmarks
    lines = ["| run | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    for row in rows:
        cells = [f"{row['plain'][k]:.3f} → {row['mirror_average'][k]:.3f}" if k in row["plain"] else "–"
                 for k in keys]
        lines.append(f"| {Path(row['run']).name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished training runs (runs/<name>)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        rows = [compare_run(run) for run in args.runs]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results_file.save(args.out, {"rows": rows, "command": results_file.command("mirror_average", argv)}, table(rows))
    print(table(rows))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
