"""Training-step time with TensorFlow's oneDNN kernels off and on, alternated in fresh processes.

    python -m experiments.bench_onednn                  # nn4_small2, 128 px, batch 64, 3 pairs (~3 min on 2 cores)
    python -m experiments.bench_onednn --model tiny --size 64 --pairs 1 --steps 2

TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI/BF16 or AMX; on an AVX2-only
CPU it runs Eigen's kernels unless ``TF_ENABLE_ONEDNN_OPTS=1``. The setting is read once, when
TensorFlow loads, so each measurement is its own process: ``--pairs`` times off then on, so drift
on a shared machine falls on both. Each process builds the model, traces one Adam step on random
images (matching random 128-d targets: the convolutions' cost, which is what the setting changes),
runs ``--warmup`` steps, then times ``--steps``. JSON in ``experiments/results/bench_onednn.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from trainer.cpu_features import describe_cpu

RESULTS = Path(__file__).resolve().parent / "results"

_STEP = """
import json, os, time
import trainer
import tensorflow as tf
import tf_keras as keras
from trainer.models import build_model
model = build_model({model!r}, 128, {size})
optimizer = keras.optimizers.Adam(1e-3)
images, targets = tf.random.normal([{batch}, {size}, {size}, 3]), tf.math.l2_normalize(tf.random.normal([{batch}, 128]), 1)
@tf.function
def step():
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True) - targets))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss
for _ in range({warmup}):
    step().numpy()
started = time.perf_counter()
for _ in range({steps}):
    step().numpy()
print("RESULT", json.dumps((time.perf_counter() - started) / {steps}))
"""


def time_step(args, onednn: str) -> float:
    """Seconds per training step in a fresh process with ``TF_ENABLE_ONEDNN_OPTS=onednn``."""
    code = _STEP.format(model=args.model, size=args.size, batch=args.batch, warmup=args.warmup, steps=args.steps)
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"error: the timing process failed (exit {done.returncode}): "
                         f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return float(json.loads(lines[-1].split(" ", 1)[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nn4_small2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_onednn.json")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"0": [], "1": []}
    for pair in range(args.pairs):
        for onednn in ("0", "1"):
            times[onednn].append(time_step(args, onednn))
            print(f"pair {pair + 1}/{args.pairs}, oneDNN {'on' if onednn == '1' else 'off'}: "
                  f"{times[onednn][-1]:.2f} s/step", flush=True)
    ratios = [off / on for off, on in zip(times["0"], times["1"])]
    report = {"model": args.model, "input_size": args.size, "batch": args.batch, "steps": args.steps,
              "machine": describe_cpu(os.cpu_count() or 1), "seconds_per_step": {"off": times["0"], "on": times["1"]},
              "speedup_per_pair": ratios, "speedup_median": statistics.median(ratios),
              "command": "python -m experiments.bench_onednn " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\n{args.model}, {args.size} px, batch {args.batch}; {report['machine']}\n")
    print("| oneDNN | s/step (median) | images/s |\n| --- | ---: | ---: |")
    for name, key in (("off", "0"), ("on", "1")):
        median = statistics.median(times[key])
        print(f"| {name} | {median:.2f} | {args.batch / median:.1f} |")
    print(f"\non / off: {report['speedup_median']:.2f}× faster (median of {args.pairs} pairs); {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
