"""Consistent teaching: the teacher's embeddings of augmented views of every training photo
(``train.teacher_views``).

A student shown a rotated, blurred or occluded crop but taught the teacher's embedding of the clean
photo learns a target that its crop no longer shows (README: strong augmentation alone did not help).
Here each training photo gets ``views`` augmented copies, made once: one random transform (rotation,
scale, shift, colour, greyscale, blur, an erased patch) applied alike to the student's aligned crop and
to the teacher's 150 px chip of the same face, and the teacher's embedding of the transformed chip (and
of its mirror image) is the target of the transformed crop: the student is taught on inputs it has never
seen, with targets that match them (Beyer et al. 2022, "Knowledge distillation: a good teacher is
patient and consistent").

The views of ``<shard>`` are ``<shard>.views<V>.tfrecord``, records like the shard's (V per photo, in
its order), with the teacher's file beside them (``teacher_cache``); ``pipeline.pk_batches`` draws a
person's K photos from the photos and their views together. Epochs still count the photos.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.teacher_cache import teacher_cached, write_teacher

VIEWS_VERSION = 1  # bump when the transforms change, so cached views are remade


def views_path(shard: str | Path, views: int) -> Path:
    return Path(f"{shard}.views{views}.tfrecord")


def views_cached(shard: str | Path, teacher: str, views: int, records: int) -> bool:
    """True when the shard's views and their teacher file were made by this version for its records."""
    path = views_path(shard, views)
    meta = Path(f"{path}.json")
    if not path.exists() or not meta.exists():
        return False
    try:
        info = json.loads(meta.read_text())
    except ValueError:
        return False
    return info.get("version") == VIEWS_VERSION and info.get("records") == records * views and \
        teacher_cached(path, teacher, records * views)


@dataclass(frozen=True)
class ViewTransform:
    """One random view, in units of the image's side so that it means the same on a 128 px crop and a
    150 px chip of the same face."""

    angle: float  # degrees, about the centre
    scale: float
    shift: tuple[float, float]  # fraction of the side
    brightness: float  # added, in [0, 255] units
    contrast: float
    saturation: float
    grey: bool
    blur: float  # Gaussian sigma as a fraction of the side, 0 = none
    erase: tuple[float, float, float, float] | None  # x, y, w, h as fractions of the side

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "ViewTransform":
        erase = None
        if rng.random() < 0.25:
            w, h = rng.uniform(0.15, 0.4, 2)
            erase = (rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h)
        return cls(angle=rng.uniform(-15, 15), scale=rng.uniform(0.9, 1.1), shift=tuple(rng.uniform(-0.05, 0.05, 2)),
                   brightness=rng.uniform(-30, 30), contrast=rng.uniform(0.7, 1.3), saturation=rng.uniform(0.6, 1.4),
                   grey=rng.random() < 0.2, blur=rng.uniform(0.004, 0.012) if rng.random() < 0.25 else 0.0,
                   erase=erase)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The view of an RGB uint8 square image, same shape and type."""
        import cv2

        size = image.shape[0]
        centre = ((size - 1) / 2, (size - 1) / 2)
        matrix = cv2.getRotationMatrix2D(centre, self.angle, self.scale)
        matrix[:, 2] += np.array(self.shift) * size
        out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out = out.astype(np.float32)
        grey = out @ np.array([0.299, 0.587, 0.114], np.float32)
        out = grey[..., None] + self.saturation * (out - grey[..., None])
        out = (out - out.mean()) * self.contrast + out.mean() + self.brightness
        if self.grey:
            out = np.repeat((out @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, axis=2)
        if self.blur:
            out = cv2.GaussianBlur(out, (0, 0), self.blur * size)
        if self.erase:
            x, y, w, h = (int(round(v * size)) for v in self.erase)
            out[y:y + h, x:x + w] = out.mean()
        return np.clip(out, 0, 255).astype(np.uint8)


def make_views(shard: str, teacher: str, views: int, seed: int = 0) -> dict:
    """Write ``views`` views of every photo of ``shard`` and the teacher's embeddings of them (a Ray
    task of ``prepare_views``); returns counts. The face box is found again as ``prepare`` found it."""
    import tensorflow as tf

    from trainer.align import FaceAligner
    from trainer.identity_shard import align_photo, crop_record
    from trainer.pipeline import RECORD_FEATURES
    from trainer.prepare import resized_only
    from trainer.teacher import build_teacher

    model, aligner = build_teacher(teacher), None
    statuses = {e["source"]: e["status"] for e in json.loads(Path(f"{shard}.json").read_text())["images"]}
    align = False if resized_only(shard) else "prealigned"
    rng = np.random.default_rng([seed, zlib.crc32(Path(shard).name.encode())])
    target, vectors, failed = views_path(shard, views), [], 0
    tmp = f"{target}.{os.getpid()}.tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        for record in tf.data.TFRecordDataset(shard):
            example = tf.io.parse_single_example(record, RECORD_FEATURES)
            crop = tf.io.decode_jpeg(example["image"], channels=3).numpy()
            source, identity = example["source"].numpy().decode(), example["identity"].numpy().decode()
            aligner = aligner or FaceAligner(crop.shape[0])
            # the shard's own status says how its crop was made: MTCNN's box, or the whole photo
            mode = False if statuses.get(source) == "resized" else align
            _, _, view, box = align_photo(aligner, source, crop.shape[0], mode)
            chip = model.chip(view, box) if view is not None else None
            for _ in range(views):
                transform = ViewTransform.draw(rng)
                writer.write(crop_record(transform.apply(crop), identity, source))
                seen = transform.apply(chip) if chip is not None else None
                vectors.append(model.embed_chips([seen, seen[:, ::-1]]) if seen is not None else None)
                failed += vectors[-1] is None
    write_teacher(str(target), teacher, vectors, model.dim)
    Path(tmp).rename(target)
    Path(f"{target}.json").write_text(json.dumps({"version": VIEWS_VERSION, "records": len(vectors), "failed": failed}))
    return {"views": len(vectors), "teacher_failed": failed}


def prepare_views(shards: list[str], teacher: str, views: int, seed: int = 0, ray_address: str = "",
                  progress: bool = True) -> dict:
    """Make the views of every shard that has none cached yet, as Ray tasks (one per shard); counts."""
    import time

    from trainer.prepare import progress_bar
    from trainer.ray_setup import bounded_tasks, ensure_ray

    todo = [s for s in shards if not views_cached(s, teacher, views, json.loads(Path(f"{s}.json").read_text())["aligned"])]
    counts = {"views_shards": len(shards), "views_reused": len(shards) - len(todo), "views_made": 0, "views_teacher_failed": 0}
    if not todo:
        return counts
    ensure_ray(ray_address)
    started = time.time()
    bar = progress_bar(len(todo), progress, f"teacher views ({views} a photo)")
    for result in bounded_tasks(make_views, [(shard, teacher, views, seed) for shard in todo]):
        counts["views_made"] += result["views"]
        counts["views_teacher_failed"] += result["teacher_failed"]
        bar.update(1)
    bar.close()
    counts["seconds_making_views"] = round(time.time() - started, 1)
    return counts
