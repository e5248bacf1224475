"""dlib's ResNet descriptor two ways on the same chips: dlib's own C++ (``face_recognition_model_v1``)
against its Keras port (``model.name: dlib_resnet``), alternated, on this machine's CPU.

    python -m experiments.bench_port --photos ../shared/data/lfw_mini      # ~1 minute on 2 cores

Both embed the same dlib 150 px chips (dlib's detector, 5-point landmarks and ``get_face_chip``, made
once, outside the timing), one forward pass per chip: dlib in one call per batch, the port in
``model(batch)``. Each of ``--repeats`` rounds times dlib then the port, so drift on a shared machine
falls on both; the figure to read is the per-round ratio. Also reported: how closely the two agree
(the smallest cosine between their vectors of one chip). JSON in ``experiments/results/bench_port.json``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from experiments import results_file
from trainer.cpu_features import describe_cpu

RESULTS = Path(__file__).resolve().parent / "results"


def dlib_chips(photos: Path, limit: int) -> np.ndarray:
    """dlib's aligned chips of the first face dlib finds in up to ``limit`` photos of ``photos/<person>/``."""
    import dlib
    from PIL import Image

    from trainer.teacher import DlibTeacher, check_teacher

    check_teacher("dlib_resnet_v1")
    detector, teacher, chips = dlib.get_frontal_face_detector(), DlibTeacher(), []
    for path in sorted(photos.glob("*/*")):
        image = np.asarray(Image.open(path).convert("RGB"))
        boxes = detector(image, 1)
        if boxes:
            box = boxes[0]
            chip = teacher.chip(image, (box.left(), box.top(), box.width(), box.height()))
            if chip is not None:
                chips.append(chip)
        if len(chips) == limit:
            break
    if not chips:
        raise FileNotFoundError(f"no face found by dlib in {photos}/<person>/*")
    return np.stack(chips)


def measure(photos: Path, limit: int, batch: int, repeats: int) -> dict:
    from trainer.models import build_model
    from trainer.teacher import DlibTeacher

    chips = dlib_chips(photos, limit)
    port, teacher = build_model("dlib_resnet"), DlibTeacher()
    batches = [chips[i:i + batch] for i in range(0, len(chips), batch)]
    ours = np.concatenate([port(b.astype(np.float32), training=False).numpy() for b in batches])  # also warms up
    theirs = np.concatenate([teacher.embed_chips(list(b)) for b in batches])
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for b in batches:
            teacher.embed_chips(list(b))
        dlib_rate = len(chips) / (time.perf_counter() - started)
        started = time.perf_counter()
        for b in batches:
            port(b.astype(np.float32), training=False).numpy()
        port_rate = len(chips) / (time.perf_counter() - started)
        rounds.append({"dlib_chips_per_s": dlib_rate, "port_chips_per_s": port_rate, "ratio": port_rate / dlib_rate})
    return {"cpu": describe_cpu(os.cpu_count() or 1), "chips": len(chips), "batch": batch, "rounds": rounds,
            "median_ratio": statistics.median(r["ratio"] for r in rounds),
            "min_cosine": float(np.min(np.sum(ours * theirs, axis=1)))}


def table(result: dict) -> str:
    lines = ["| round | dlib (C++) chips/s | Keras port chips/s | port / dlib |", "| ---: | ---: | ---: | ---: |"]
    lines += [f"| {i + 1} | {r['dlib_chips_per_s']:.1f} | {r['port_chips_per_s']:.1f} | {r['ratio']:.2f} |"
              for i, r in enumerate(result["rounds"])]
    lines.append(f"\n{result['chips']} chips, batches of {result['batch']}; median ratio "
                 f"{result['median_ratio']:.2f}; smallest cosine between the two on one chip {result['min_cosine']:.6f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/lfw_mini"),
                        help="identity folder of photos (<person>/<photo>) to make dlib chips of")
    parser.add_argument("--limit", type=int, default=64, help="chips to time")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_port.json")
    args = parser.parse_args(argv)
    return results_file.measure_and_publish(
        "bench_port", argv, args.out, lambda: measure(args.photos, args.limit, args.batch, args.repeats), table)


if __name__ == "__main__":
    raise SystemExit(main())
