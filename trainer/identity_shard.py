"""One identity's photos -> its aligned TFRecord shard: the Ray task of ``trainer.prepare``.

Every kept photo becomes one record (``image``: a 95-quality JPEG of the aligned crop, ``identity``,
``source``: the photo's path); the shard is written under a temporary name and renamed, so a reader
never sees half of one, and its summary (every photo's status) is written beside it as
``<shard>.json``, which is what a re-run reuses.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from trainer.align import DEFAULT_TEMPLATE, FaceAligner, ImageError, read_image, resize_square
from trainer.teacher_cache import write_teacher

ALIGNED_STATUSES = ("ok", "several_faces", "resized")  # photo statuses that make a record in the shard


def align_identity(identity: str, files: list[str], shard: str, size: int, align: bool | str,
                   teacher: str = "", template: str = DEFAULT_TEMPLATE) -> dict:
    """Align one identity's photos into ``shard`` (written atomically); return its summary.

    ``align``: True detects and aligns (photos without a face are dropped), False only resizes
    (already-cropped faces), "prealigned" detects and aligns but resizes a photo MTCNN finds no face
    in (status "resized"); "detect_or_resize" does the same for photos of any shape (benchmarks,
    where every photo must be embedded). With ``teacher`` the teacher's embeddings of every kept photo are written
    beside the shard (``teacher_path``), in the shard's record order.
    """
    import tensorflow as tf

    aligner = FaceAligner(size, template=template)
    model = None
    if teacher:
        from trainer.teacher import build_teacher

        model = build_teacher(teacher)
    images, vectors = [], []
    tmp = f"{shard}.{os.getpid()}.tmp"  # two runs preparing the same identity at once never share a file
    with tf.io.TFRecordWriter(tmp) as writer:
        for path in files:
            entry, crop, view, box = align_photo(aligner, path, size, align)
            if crop is not None:
                writer.write(crop_record(crop, identity, path))
                if model is not None:
                    vectors.append(model.embed(view, box))
                    entry["teacher"] = vectors[-1] is not None
            images.append(entry)
    if model is not None:
        write_teacher(shard, teacher, vectors, model.dim)
    Path(tmp).rename(shard)
    summary = {"identity": identity, "shard": Path(shard).name,
               "aligned": sum(e["status"] in ALIGNED_STATUSES for e in images), "images": images}
    Path(shard + ".json").write_text(json.dumps(summary))
    return summary


def align_photo(aligner: FaceAligner, path: str, size: int, align: bool | str):
    """One photo -> (its summary entry, the aligned crop or None, the image the face was found in,
    the face box in it): the same crop ``align_identity`` writes (``trainer/teacher_views.py`` needs
    the box again, which the shard does not keep)."""
    entry = {"source": path, "status": "ok"}
    view = box = None
    try:
        rgb = read_image(path)
        if align:
            result = aligner.align(rgb)
            entry["status"], crop, view, box = result.status, result.crop, result.view, result.box
            if crop is None and align in ("prealigned", "detect_or_resize"):
                crop, entry["fallback"] = fallback_crop(rgb, size, aligner.template)
                entry["status"], view, box = "resized", rgb, (0, 0, rgb.shape[1], rgb.shape[0])
        else:
            crop, view, box = resize_square(rgb, size), rgb, (0, 0, rgb.shape[1], rgb.shape[0])
    except ImageError as exc:
        entry.update(status="unreadable", reason=str(exc))
        crop = None
    return entry, crop, view, box


def fallback_available(template: str) -> bool:
    """Whether a photo MTCNN finds no face in can still be aligned: in dlib's framing, by dlib's own
    landmarks when the [teacher] extra is installed."""
    if template != "dlib":
        return False
    from trainer.teacher import DlibTeacher, TeacherMissing, check_teacher

    try:
        check_teacher(DlibTeacher.name)
        return True
    except TeacherMissing:
        return False


def fallback_crop(rgb, size: int, template: str):
    """(crop, how) for a photo MTCNN found no face in. In dlib's framing, with dlib installed, dlib's
    5-point landmarks placed over the whole photo give dlib's own chip: exactly what the teacher embeds
    for such a photo (trainer/teacher.py), so its vectors and the student's crops agree, and the
    dlib_resnet model sees the chip it was made for (Yale B's lab photos: 825 of 1,261). Otherwise a
    centre crop, resized."""
    import cv2

    if fallback_available(template):
        from trainer.teacher import DlibTeacher

        chip = DlibTeacher().chip(rgb, (0, 0, rgb.shape[1], rgb.shape[0]))
        if chip is not None:
            if chip.shape[0] != size:
                chip = cv2.resize(chip, (size, size), interpolation=cv2.INTER_AREA)
            return chip, "dlib_landmarks"
    return resize_square(rgb, size), "centre_crop"


def crop_record(crop, identity: str, source: str) -> bytes:
    """A shard record: the RGB crop as a 95-quality JPEG, its identity and its photo's path."""
    import cv2
    import tensorflow as tf

    _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg.tobytes()])),
        "identity": tf.train.Feature(bytes_list=tf.train.BytesList(value=[identity.encode()])),
        "source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[source.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
