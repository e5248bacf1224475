"""Edge export measured: a run's Keras model against its TFLite float32 / float16 / int8 and ONNX
models, side by side in one process on this CPU.

    nice -n 15 python -m experiments.edge_export runs/<run> [--identities N] [--threads T]
                                                 [--out experiments/results/edge_export.json]

For the run's inference model (mirror-averaged by default) and each export of it (serving/tflite.py,
int8 calibrated on 160 crops of the run's own training shards; serving/onnx_export.py when tf2onnx
is installed): file size (Keras: the SavedModel version ``serving.export`` publishes), the test
split's 10-fold pair accuracy, AUC and one-shot rank-1 (``trainer.evaluate.evaluate_embeddings``,
the same pairs for every row), max |Δ embedding| and min cosine against Keras, the share of test
pairs whose same/different answer at Keras's best threshold flips, latency per image at batch 1
(median) and throughput at batch 32. Keras runs as a ``tf.function`` (what the SavedModel serves);
TFLite on the LiteRT interpreter with XNNPACK; ONNX on ONNX Runtime's CPU provider.
Writes the JSON and a markdown table beside it (``.md``) and prints the table.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import serving  # noqa: F401  (tf-keras before TensorFlow)
from experiments import results_file
from trainer.run_plan import RunPlan

RESULTS = Path(__file__).resolve().parent / "results" / "edge_export.json"


def shard_images(shards: list[str], image_size: int):
    """(images float32 [N, S, S, 3], identity names, sources) of every record of ``shards``, in order."""
    from trainer import pipeline

    images, names, sources = [], [], []
    for batch in pipeline.ordered_images(shards, image_size, batch_size=128):
        images.append(batch["image"].numpy())
        names += [s.decode() for s in batch["identity"].numpy()]
        sources += [s.decode() for s in batch["source"].numpy()]
    if not images:
        raise ValueError(f"no images in {len(shards)} shard(s)")
    return np.concatenate(images), names, sources


def test_split(plan: RunPlan, identities: int = 0):
    """``shard_images`` of the run's test shards (the first ``identities`` shards when given: each
    shard is one identity)."""
    return shard_images(plan.shards.test[:identities or None], plan.image_size)


def keras_embedder(model):
    from trainer.models import inference_graph

    fn = inference_graph(model)
    return lambda images, batch_size=32: np.concatenate(
        [fn(images[i:i + batch_size]).numpy() for i in range(0, len(images), batch_size)])


def speed(embed, images, singles: int, batches: int) -> dict:
    """Median ms per image at batch 1 and images/s at batch 32 (after a warm-up of each)."""
    embed(images[:1], 1), embed(images[:32], 32)
    single = []
    for i in range(singles):
        start = time.perf_counter()
        embed(images[i % len(images):][:1], 1)
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(batches):
        embed(images[(32 * i) % max(1, len(images) - 32):][:32], 32)
    return {"ms_per_image_batch1": 1000 * statistics.median(single),
            "images_per_s_batch32": 32 * batches / (time.perf_counter() - start)}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def measure(run_dir: str, identities: int = 0, threads: int | None = None, singles: int = 50, batches: int = 8) -> dict:
    from serving import tflite
    from serving.tflite_embedder import interpreter_class
    from trainer.checkpoints import load_run

    threads = threads or os.cpu_count() or 1
    model, cfg, plan = load_run(run_dir)
    images, names, sources = test_split(plan, identities)
    crops = tflite.representative_crops(run_dir, plan.image_size)
    scratch = Path(tempfile.mkdtemp(prefix="edge-export-"))
    candidates = [("Keras float32 (SavedModel)", None)] + [(f"TFLite {q}", q) for q in ("float32", "float16", "int8")]
    try:
        import tf2onnx  # noqa: F401
        candidates.append(("ONNX float32 (ONNX Runtime)", "onnx"))
    except ImportError:
        pass
    try:
        rows, reference = _rows(model, cfg, candidates, images, names, sources, crops, scratch, threads, singles, batches)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"run": run_dir, "architecture": model.name, "image_size": plan.image_size,
            "test_images": len(images), "test_identities": len(set(names)), "pairs": int(len(reference["dist"])),
            "representative_crops": len(crops), "threads": threads, "interpreter": interpreter_class().__module__,
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows}


def _rows(model, cfg, candidates, images, names, sources, crops, scratch, threads, singles, batches):
    from serving import tflite
    from serving.export import export
    from serving.tflite_embedder import TFLiteEmbedder
    from trainer.evaluate import evaluate_embeddings, verification

    rows, reference = [], None
    for label, kind in candidates:
        start = time.perf_counter()
        if kind is None:
            size = dir_bytes(export(model, scratch / "saved_model"))
            embed = keras_embedder(model)
        elif kind == "onnx":
            from serving.onnx_export import OnnxEmbedder, write_onnx

            size = write_onnx(model, scratch / "model.onnx")["bytes"]
            embed = OnnxEmbedder(scratch / "model.onnx", threads).embed
        else:
            q = "none" if kind == "float32" else kind
            size = tflite.write_tflite(model, scratch / f"{kind}.tflite", q, crops if q == "int8" else None)["bytes"]
            embed = TFLiteEmbedder(scratch / f"{kind}.tflite", threads).embed
        export_s = time.perf_counter() - start
        vectors = embed(images, 32)
        metrics = evaluate_embeddings(vectors, names, sources, cfg.eval)
        _, dist, _ = verification(vectors, names, sources, cfg.eval.folds, cfg.eval.pairs_per_fold, cfg.eval.far_target)
        if reference is None:
            reference = {"vectors": vectors, "dist": dist, "threshold": metrics["best_threshold"]}
        flips = np.mean((dist < reference["threshold"]) != (reference["dist"] < reference["threshold"]))
        rows.append({"model": label, "bytes": size, "export_s": export_s, "accuracy": metrics["accuracy"],
                     "accuracy_std": metrics["accuracy_std"], "auc": metrics["auc"],
                     "oneshot_rank1": metrics.get("oneshot_rank1", float("nan")),
                     "max_abs_diff": float(np.abs(vectors - reference["vectors"]).max()),
                     "min_cosine": float((vectors * reference["vectors"]).sum(axis=1).min()),
                     "pairs_flipped": float(flips), **speed(embed, images, singles, batches)})
        print(f"{label}: done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows, reference


def table(result: dict) -> str:
    lines = ["| model | size (MiB) | test accuracy | AUC | 1-shot rank-1 | max abs Δ vs Keras | min cosine | "
             "pairs flipped | ms/image (batch 1) | images/s (batch 32) |", "| --- |" + " ---: |" * 9]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['bytes'] / 2**20:.1f} | {r['accuracy']:.3f} ± {r['accuracy_std']:.3f} | "
                     f"{r['auc']:.3f} | {r['oneshot_rank1']:.3f} | {r['max_abs_diff']:.1e} | {r['min_cosine']:.4f} | "
                     f"{100 * r['pairs_flipped']:.2f} % | {r['ms_per_image_batch1']:.1f} | {r['images_per_s_batch32']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished training run (runs/<name>)")
    parser.add_argument("--identities", type=int, default=0, help="only the first N test identities (0: all)")
    parser.add_argument("--threads", type=int, help="interpreter threads (default: every core)")
    parser.add_argument("--singles", type=int, default=50, help="batch-1 timings per model (median reported)")
    parser.add_argument("--batches", type=int, default=8, help="batch-32 timings per model")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        result = measure(args.run, args.identities, args.threads, args.singles, args.batches)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["command"] = results_file.command("edge_export", argv)
    note = (f"{result['architecture']} at {result['image_size']} px, {result['test_images']} test photos of "
            f"{result['test_identities']} identities, {result['pairs']} pairs; {result['threads']} threads, "
            f"load average {result['load_average'][0]:.1f} on {result['cpu_count']} cores")
    results_file.save(args.out, result, f"`{result['command']}`: {note}\n\n{table(result)}")
    print(table(result))
    print(note)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
