"""Which face framing does the dlib teacher need? Measures ``trainer/align.py``'s ``DLIB_CHIP_LANDMARKS``
and the teacher's accuracy on crops in each framing (session 25).

    python -m experiments.face_template runs/<run> [--split val] [--out experiments/results/face_template.json]

For every photo of the run's ``--split`` people (the photos its shards were made from): MTCNN's five
landmarks, and dlib's own 150 px chip (its 5-point landmarks inside MTCNN's box, padding 0.25). Then

1. the template: where MTCNN finds the same five points on dlib's chips (median, as fractions of the side);
2. the teacher's LFW-protocol pair accuracy, AUC and one-shot rank-1 on (a) its own chips (what
   ``prepare`` caches as the student's target), (b) our crops aligned to ArcFace's template, (c) our
   crops aligned to the measured dlib template, both at the run's crop size, resized to 150 px;
   and the mean cosine between (b), (c) and (a).

A student learns to map its crop to (a): when the teacher itself cannot get (a) back from the crop, the
student is asked for something its pixels do not show.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from experiments import results_file

SAMPLE = 200  # photos whose dlib chips the template is measured on


def landmarks_and_chips(sources: list[str]):
    """Per photo: (detection view, MTCNN's 5 landmarks or None, dlib's chip or None)."""
    from tqdm import tqdm

    from trainer.align import LANDMARK_KEYS, MIN_CONFIDENCE, FaceAligner, detection_view, read_image
    from trainer.teacher import DlibTeacher

    detector, teacher, rows = FaceAligner.detector(), DlibTeacher(), []
    for source in tqdm(sources, desc="MTCNN + dlib chips", unit="photo", file=sys.stderr):
        view = detection_view(read_image(source))
        faces = sorted((f for f in detector.detect_faces(view) if f["confidence"] >= MIN_CONFIDENCE),
                       key=lambda f: -f["box"][2] * f["box"][3])
        if not faces:
            rows.append((view, None, None))
            continue
        points = np.array([faces[0]["keypoints"][k] for k in LANDMARK_KEYS], float)
        rows.append((view, points, teacher.chip(view, faces[0]["box"])))
    return rows


def measure_template(rows) -> tuple[np.ndarray, int]:
    """The median position of MTCNN's five points on dlib's chips, as fractions of the chip side."""
    from trainer.align import LANDMARK_KEYS, MIN_CONFIDENCE, FaceAligner
    from trainer.teacher import DlibTeacher

    detector, found = FaceAligner.detector(), []
    for _, _, chip in [r for r in rows if r[2] is not None][:SAMPLE]:
        faces = [f for f in detector.detect_faces(np.ascontiguousarray(chip)) if f["confidence"] >= MIN_CONFIDENCE]
        if faces:
            found.append(np.array([faces[0]["keypoints"][k] for k in LANDMARK_KEYS], float) / DlibTeacher.chip_size)
    return np.median(np.array(found), axis=0), len(found)


def teacher_figures(chips: list[np.ndarray], identities: list[str], sources: list[str], own: np.ndarray | None,
                    eval_cfg) -> tuple[dict, np.ndarray]:
    from trainer.evaluate import evaluate_embeddings
    from trainer.teacher import DlibTeacher

    teacher = DlibTeacher()
    vectors = np.concatenate([teacher.embed_chips(chips[i:i + 64]) for i in range(0, len(chips), 64)])
    metrics = evaluate_embeddings(vectors, identities, sources, eval_cfg)
    figures = {k: round(float(metrics[k]), 4) for k in ("accuracy", "auc", "oneshot_rank1")}
    if own is not None:
        figures["cosine_to_own_chip"] = round(float(np.mean(np.sum(vectors * own, axis=1))), 4)
    return figures, vectors


def main(argv: list[str] | None = None) -> int:
    import cv2

    from trainer import config as config_lib
    from trainer import pipeline
    from trainer.align import TEMPLATES, warp_to_points
    from trainer.run_plan import RunPlan

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--out", default="experiments/results/face_template.json")
    args = parser.parse_args(argv)
    plan = RunPlan.load(args.run_dir)  # only its photos and crop size: no model is loaded
    cfg = config_lib.from_dict(plan.config)
    identities, sources = [], []
    for batch in pipeline.ordered_images(getattr(plan.shards, args.split), plan.image_size, 256):
        identities += [s.decode() for s in batch["identity"].numpy()]
        sources += [s.decode() for s in batch["source"].numpy()]
    started = time.time()
    rows = landmarks_and_chips(sources)
    keep = [i for i, (_, points, chip) in enumerate(rows) if points is not None and chip is not None]
    identities, sources, rows = [identities[i] for i in keep], [sources[i] for i in keep], [rows[i] for i in keep]
    template, measured_on = measure_template(rows)
    print(f"dlib chip framing, measured on {measured_on} chips:\n{template.round(4)}", flush=True)

    def crops(points: np.ndarray) -> list[np.ndarray]:  # the run's crop, at the teacher's chip size
        return [cv2.resize(warp_to_points(view, lm, points, plan.image_size), (150, 150)) for view, lm, _ in rows]

    own, own_vectors = teacher_figures([chip for _, _, chip in rows], identities, sources, None, cfg.eval)
    report = {"command": results_file.command("face_template", argv), "run": str(args.run_dir), "split": args.split,
              "photos": len(rows), "crop_size": plan.image_size,
              "measured_template": template.round(4).tolist(), "template_measured_on": measured_on,
              "teacher_on_its_own_chip": own}
    for name, points in (("arcface", TEMPLATES["arcface"]), ("dlib_measured", template), ("dlib", TEMPLATES["dlib"])):
        figures, _ = teacher_figures(crops(points), identities, sources, own_vectors, cfg.eval)
        report[f"teacher_on_{name}_crops"] = figures
    report["seconds"] = round(time.time() - started, 1)
    for key, value in report.items():
        print(f"{key}: {value}")
    results_file.save(Path(args.out), report)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
