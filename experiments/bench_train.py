"""Training throughput: plain Keras ``fit`` vs Ray Train with 1 and 2 workers, in one run.

    python -m experiments.bench_train                      # nn4_small2 on celeba299 (≈10 min on 2 cores)
    python -m experiments.bench_train --model tiny --steps 10 --source /path/to/people

Same aligned data, same P×K batch, same loss. Each mode trains ``--epochs`` epochs of ``--steps``
steps; throughput is taken from the last epoch (the first one includes graph tracing). Also
measured: the input pipeline alone (decode + augment + P×K batching, no model), and for the Ray
modes the share of each epoch spent waiting for input (``input_wait_fraction``). Results go to
``experiments/results/bench_train.json``; a markdown table is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from trainer import config as config_lib, run_results, train
from trainer.cpu_features import describe_cpu
from trainer.run_plan import RunPlan

RESULTS = Path(__file__).resolve().parent / "results"


def bench_config(args, workers: int, cpus: float, run_name: str, precision: str = "float32", val: float = 0.0):
    return config_lib.from_dict({
        "data": {"source": args.source, "val_fraction": val, "test_fraction": 0.0},
        "model": {"name": args.model, **({"input_size": args.input_size} if args.input_size else {})},
        "train": {"epochs": args.epochs, "steps_per_epoch": args.steps, "identities_per_batch": args.p,
                  "images_per_identity": args.k, "optimizer": "adam", "learning_rate": 1e-3,
                  "out_dir": str(args.out / "runs"), "run_name": run_name, "precision": precision},
        "ray": {"num_workers": workers, "cpus_per_worker": cpus},
        "mlflow": {"tracking_uri": f"sqlite:///{args.out / 'mlflow.db'}", "experiment": "bench-train"},
    })


def plain_fit(plan: RunPlan, cfg) -> dict:
    """The baseline: one process, ``model.compile`` + ``model.fit`` with the triplet loss."""
    import tf_keras as keras

    from trainer import pipeline
    from trainer.losses import TripletSemiHardLoss
    from trainer.models import build_model

    t = cfg.train
    model = build_model(cfg.model.name, cfg.model.embedding_dim, plan.image_size)
    model.compile(keras.optimizers.Adam(t.learning_rate), TripletSemiHardLoss(t.margin, t.distance_metric))
    shards = plan.shards.train
    data = pipeline.pk_batches(shards, list(range(len(shards))), t.identities_per_batch, t.images_per_identity,
                               plan.image_size, True, seed=0)
    epoch_seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.started)

    model.fit(data, epochs=t.epochs, steps_per_epoch=t.steps_per_epoch, verbose=2, callbacks=[Timer()])
    images = t.steps_per_epoch * t.identities_per_batch * t.images_per_identity
    return {"images_per_second": images / epoch_seconds[-1], "epoch_seconds": epoch_seconds[-1]}


def ray_fit(plan: RunPlan, cfg) -> dict:
    results = train.run_tracked(plan, cfg)
    last = results["last_epoch"]
    return {"images_per_second": last["compute/epoch_images"] / last["compute/epoch_wall_seconds"],
            "epoch_seconds": last["compute/epoch_wall_seconds"], "input_wait_fraction": last["input_wait_fraction"]}


def input_pipeline_only(plan: RunPlan, cfg, batches: int) -> dict:
    from trainer import pipeline

    t = cfg.train
    shards = plan.shards.train
    data = iter(pipeline.pk_batches(shards, list(range(len(shards))), t.identities_per_batch,
                                    t.images_per_identity, plan.image_size, True, seed=0))
    next(data)
    started = time.perf_counter()
    for _ in range(batches):
        next(data)
    seconds = time.perf_counter() - started
    return {"images_per_second": batches * t.identities_per_batch * t.images_per_identity / seconds}


def precision_modes(args) -> dict:
    """float32 against mixed_bfloat16 on the same run (Ray Train, 1 worker, same seed and data):
    images/s of the last epoch and the validation accuracy the run reached."""
    modes, stamp = {}, time.strftime("%H%M%S")
    for precision in ("float32", "mixed_bfloat16"):
        cfg = bench_config(args, 1, os.cpu_count() or 1, f"precision-{precision}-{stamp}", precision, val=0.1)
        cfg.train.keep = "last"
        result = ray_fit(train.plan_run(cfg, None), cfg)
        last = run_results.load(Path(cfg.train.out_dir) / cfg.train.run_name)["last_epoch"]
        modes[precision] = {**result, "val_accuracy": last.get("val_accuracy"), "val_auc": last.get("val_auc")}
    return modes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared/data/celeba299"))
    parser.add_argument("--model", default="nn4_small2")
    parser.add_argument("--input-size", type=int, default=None,
                        help="pixels (default: the model's own); reuses an aligned cache of that size")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--p", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(".facenet/bench_train"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--precision", action="store_true",
                        help="compare float32 with mixed_bfloat16 (images/s and validation accuracy) instead")
    args = parser.parse_args()
    args.out = args.out.resolve()
    cores = os.cpu_count() or 1
    if args.precision:
        return report_precision(args, cores)
    args.json = args.json or RESULTS / "bench_train.json"

    modes = {}
    cfg = bench_config(args, 0, cores, "plain")
    plan = train.plan_run(cfg, None)
    modes["input pipeline only"] = input_pipeline_only(plan, cfg, batches=args.steps)
    modes["plain Keras fit (1 process)"] = plain_fit(plan, cfg)
    for workers in (1, 2):
        cfg = bench_config(args, workers, cores / workers, f"ray-{workers}")
        modes[f"Ray Train, {workers} worker{'s' if workers > 1 else ''}"] = ray_fit(train.plan_run(cfg, None), cfg)

    base = modes["plain Keras fit (1 process)"]["images_per_second"]
    for result in modes.values():
        result["vs_plain_fit"] = result["images_per_second"] / base
    report = {"model": args.model, "input_size": args.input_size or "the model's own",
              "global_batch": args.p * args.k, "steps_per_epoch": args.steps,
              "machine": f"{describe_cpu(cores)}, no GPU", "modes": modes,
              "command": "python -m experiments.bench_train " + " ".join(sys.argv[1:])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\n{args.model}, global batch {args.p}×{args.k}, {report['machine']}\n")
    print("| mode | images/s | vs plain fit | input wait |\n| --- | ---: | ---: | ---: |")
    for name, r in modes.items():
        wait = f"{100 * r['input_wait_fraction']:.1f}%" if "input_wait_fraction" in r else "–"
        print(f"| {name} | {r['images_per_second']:.1f} | {r['vs_plain_fit']:.2f}× | {wait} |")
    return 0


def report_precision(args, cores: int) -> int:
    modes = precision_modes(args)
    base = modes["float32"]["images_per_second"]
    for result in modes.values():
        result["vs_float32"] = result["images_per_second"] / base
    report = {"model": args.model, "input_size": args.input_size or "the model's own",
              "global_batch": args.p * args.k, "steps_per_epoch": args.steps,
              "epochs": args.epochs, "machine": f"{describe_cpu(cores)}, no GPU", "modes": modes,
              "command": "python -m experiments.bench_train " + " ".join(sys.argv[1:])}
    path = args.json or RESULTS / "bench_train_precision.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"\n{args.model}, global batch {args.p}×{args.k}, {args.epochs} epochs of {args.steps} steps, {report['machine']}\n")
    print("| precision | images/s | vs float32 | val accuracy | val AUC |\n| --- | ---: | ---: | ---: | ---: |")
    for name, r in modes.items():
        print(f"| {name} | {r['images_per_second']:.1f} | {r['vs_float32']:.2f}× | {r['val_accuracy']:.3f} | {r['val_auc']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
