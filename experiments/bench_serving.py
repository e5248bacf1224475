"""Serving benchmark: the exported SavedModel run in-process (what TF-Serving runs, minus transport).

    python -m experiments.bench_serving [--quick] [--models nn4_small2 nn2]

For each model (random initial weights: timing does not depend on them): export time (first export,
which traces the network, and a gallery-only re-export), ``serving_default`` latency at batch 1
(p50 / p99), throughput at batch 32 and 128, and ``identify`` latency at batch 1 against 10,000
enrolled people (synthetic unit vectors). Writes ``experiments/results/bench_serving.json`` and
prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import tensorflow as tf

from serving.export import export
from trainer.models import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "bench_serving.json"


def latencies(fns: dict, inputs: dict, runs: int, warmup: int = 3) -> dict[str, np.ndarray]:
    """Per-call milliseconds of each function, calls interleaved so that background load on a
    shared machine hits every function alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn(**inputs)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn(**inputs)
            next(iter(out.values())).numpy()  # wait for the result, not just the dispatch
            times[name].append(time.perf_counter() - start)
    return {name: np.array(t) * 1000.0 for name, t in times.items()}


def throughput(fn, images: tf.Tensor, runs: int) -> dict[str, float]:
    """Images/s over ``runs`` batches: the best batch (least disturbed by other processes on a
    shared machine) and the median, plus process CPU-ms per image, which contention barely moves."""
    fn(images=images)  # warm-up (first call at a new batch size allocates)
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        fn(images=images)["embeddings"].numpy()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    batch = int(images.shape[0])
    return {"best": batch / min(walls), "median": batch / float(np.median(walls)),
            "cpu_ms_per_image": 1000.0 * float(np.median(cpus)) / batch}


def bench_model(name: str, people: int, quick: bool, workdir: Path) -> dict:
    model = build_model(name)
    size = int(model.input_shape[1])
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    export(model, workdir, model_name=name)
    first_export = time.perf_counter() - start

    gallery = rng.normal(size=(people, int(model.output_shape[-1]))).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    names = [f"person-{i:05d}" for i in range(people)]
    start = time.perf_counter()
    path = export(model, workdir, model_name=name, gallery_embeddings=gallery, gallery_names=names, threshold=1.1)
    gallery_export = time.perf_counter() - start

    loaded = tf.saved_model.load(str(path))
    embed, identify = loaded.signatures["serving_default"], loaded.signatures["identify"]
    one = {"images": tf.constant(rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32))}
    runs = 10 if quick else (100 if name == "nn2" else 300)
    measured = latencies({"embed": embed, "identify": identify}, one, runs)
    embed_ms, identify_ms = measured["embed"], measured["identify"]
    result = {
        "model": name, "image_size": size, "parameters": int(model.count_params()),
        "export_first_s": round(first_export, 2), "export_gallery_update_s": round(gallery_export, 2),
        "saved_model_mb": round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1),
        "embed_b1_p50_ms": round(float(np.percentile(embed_ms, 50)), 2),
        "embed_b1_p99_ms": round(float(np.percentile(embed_ms, 99)), 2),
        "identify_people": people,
        "identify_b1_p50_ms": round(float(np.percentile(identify_ms, 50)), 2),
        "identify_b1_p99_ms": round(float(np.percentile(identify_ms, 99)), 2),
        "latency_runs": runs,
    }
    for batch in (32, 128):
        images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
        reps = 2 if quick else max(3, 2048 // (batch * (4 if name == "nn2" else 1)))
        measured = throughput(embed, images, reps)
        result[f"throughput_b{batch}_img_s"] = round(measured["best"], 1)
        result[f"throughput_b{batch}_median_img_s"] = round(measured["median"], 1)
        result[f"cpu_ms_per_image_b{batch}"] = round(measured["cpu_ms_per_image"], 2)
    return result


def table(rows: list[dict]) -> str:
    people = f"{rows[0]['identify_people']:,}" if rows else "?"
    lines = ["| model | input | embed p50 / p99 (ms, batch 1) | images/s batch 32 (best / median) "
             "| images/s batch 128 (best / median) | CPU-ms per image (batch 128) "
             f"| identify p50 / p99 (ms, batch 1, {people} people) | first export (s) | gallery re-export (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| `{r['model']}` | {r['image_size']} px | {r['embed_b1_p50_ms']:.1f} / {r['embed_b1_p99_ms']:.1f} "
                     f"| {r['throughput_b32_img_s']:.0f} / {r['throughput_b32_median_img_s']:.0f} "
                     f"| {r['throughput_b128_img_s']:.0f} / {r['throughput_b128_median_img_s']:.0f} "
                     f"| {r['cpu_ms_per_image_b128']:.1f} "
                     f"| {r['identify_b1_p50_ms']:.1f} / {r['identify_b1_p99_ms']:.1f} "
                     f"| {r['export_first_s']:.1f} | {r['export_gallery_update_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["nn4_small2", "nn2"])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="few repetitions (a smoke run)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as workdir:
        for name in args.models:
            rows.append(bench_model(name, args.people, args.quick, Path(workdir)))
            print(json.dumps(rows[-1]), flush=True)
    report = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "tensorflow": tf.__version__, "gpu": bool(tf.config.list_physical_devices("GPU")),
                          # the machine may be shared: the load average says how much
                          "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
              "mode": "in-process SavedModel signatures (tf.saved_model.load), float32 inputs at the native size",
              "quick": args.quick, "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(table(rows))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
