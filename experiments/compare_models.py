"""Teacher, student and from-scratch model side by side on every benchmark the project has.

    python -m experiments.compare_models --run student=runs/<distilled run> --run scratch=runs/<triplet run> \\
        [--teacher dlib_resnet_v1] [--benchmarks-from experiments/distill_dlib.yaml]

For each run (and the teacher, on the same photos): the test split of the first run (its pairs are
regenerated with the same seed, so every model sees the same pairs), and every ``eval.benchmarks``
entry of the config given (LFW-format pairs files), in LFW's protocol. Then embeddings per second on
this machine: the student embedding aligned crops in batches, and the teacher on original photos
(its landmarks, chip and descriptor; MTCNN detection, which both need, is left out of both).
Results go to ``experiments/results/compare_models.json`` and a markdown table is printed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from trainer import checkpoints, config as config_lib
from trainer.evaluate import embed_shards, evaluate_embeddings
from trainer.evaluation.benchmark import benchmark_name, evaluate_benchmark
from trainer.run_plan import RunPlan

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("accuracy", "accuracy_std", "val", "auc", "eer")


def split_figures(embedder, plan: RunPlan, cfg) -> dict:
    embedded = embed_shards(embedder, plan.shards.test, plan.image_size, cfg.eval.eval_batch_size)
    metrics = evaluate_embeddings(*embedded, cfg.eval)
    return {k: metrics[k] for k in KEYS + ("oneshot_rank1",) if k in metrics}


def benchmark_figures(embedder, plan: RunPlan, cfg, benchmarks) -> dict:
    found = {}
    for bench in benchmarks:
        name = benchmark_name(bench.pairs, bench.name or None)
        metrics = evaluate_benchmark(embedder, config_lib.resolve_path(bench.pairs),
                                     config_lib.resolve_path(bench.images), cfg.data.cache_dir, plan.image_size,
                                     cfg.eval.far_target, None, cfg.eval.eval_batch_size, bench.numbering,
                                     template=plan.face_template)
        found[name] = {k: metrics[k] for k in KEYS + ("pairs", "fallback_photos")}
    return found


def student_speed(model, plan: RunPlan, images: int = 512, batch: int = 64) -> float:
    """Aligned crops embedded per second (batches of ``batch``, after one warm-up batch)."""
    import tensorflow as tf

    crops = tf.random.uniform((batch, plan.image_size, plan.image_size, 3), 0, 255)
    model(crops, training=False)
    started = time.perf_counter()
    for _ in range(images // batch):
        model(crops, training=False).numpy()
    return images / (time.perf_counter() - started)


def teacher_speed(teacher_name: str, photos: list[Path], limit: int = 40) -> float:
    """Photos embedded per second by the teacher, given the face box MTCNN found (as prepare does)."""
    from trainer.align import FaceAligner, read_image
    from trainer.teacher import build_teacher

    teacher, aligner = build_teacher(teacher_name), FaceAligner(96)
    faces = []
    for path in photos:
        result = aligner.align(read_image(path))
        if result.box is not None:
            faces.append((result.view, result.box))
        if len(faces) == limit:
            break
    teacher.embed(*faces[0])  # loads the models
    started = time.perf_counter()
    for view, box in faces:
        teacher.embed(view, box)
    # embed() computes the face and its mirror image; one embedding per photo is half of that
    return 2 * len(faces) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=RUN_DIR")
    parser.add_argument("--teacher", default="dlib_resnet_v1")
    parser.add_argument("--benchmarks-from", default="experiments/distill_dlib.yaml",
                        help="config whose eval.benchmarks are used")
    parser.add_argument("--json", type=Path, default=RESULTS / "compare_models.json")
    args = parser.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)
    benchmarks = config_lib.load(args.benchmarks_from).eval.benchmarks
    first = next(iter(runs.values()))
    report: dict = {"test_split_of": first, "models": {}}
    _, base_cfg, base_plan = checkpoints.load_run(first)
    embedders = {label: checkpoints.load_run(run)[0] for label, run in runs.items()}
    if args.teacher:
        embedders[f"teacher ({args.teacher})"] = args.teacher
    for label, embedder in embedders.items():
        print(f"== {label}", flush=True)
        report["models"][label] = {"test": split_figures(embedder, base_plan, base_cfg),
                                   **benchmark_figures(embedder, base_plan, base_cfg, benchmarks)}
    photos = sorted(Path(config_lib.resolve_path(base_cfg.data.source)).glob("*/*.jpg"))[:60]
    report["embeddings_per_second"] = {label: student_speed(model, base_plan) for label, model in embedders.items()
                                       if not isinstance(model, str)}
    if args.teacher:
        report["embeddings_per_second"][f"teacher ({args.teacher})"] = teacher_speed(args.teacher, photos)
    report["command"] = "python -m experiments.compare_models " + " ".join(sys.argv[1:] if argv is None else argv)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=float))
    print(format_table(report))
    return 0


def format_table(report: dict) -> str:
    names = list(next(iter(report["models"].values())))
    lines = ["| model | " + " | ".join(names) + " | embeddings/s |", "| --- |" + " ---: |" * (len(names) + 1)]
    for label, figures in report["models"].items():
        cells = [f"{figures[n]['accuracy']:.3f} ± {figures[n]['accuracy_std']:.3f}" for n in names]
        speed = report["embeddings_per_second"].get(label, np.nan)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {speed:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
