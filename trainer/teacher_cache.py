"""The teacher's embeddings cached beside each aligned shard (written by prepare's Ray tasks).

``<shard>.<teacher>.tfrecord`` holds one record per shard record, in the same order: ``teacher``
(the face's and its mirror image's unit vectors, 2 × dim floats) and ``has_teacher``; its
``.json`` beside it names the teacher, the size and the record count, so a cache from another
teacher, of another size or for other photos is recomputed, never used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def teacher_path(shard: str | Path, teacher: str) -> Path:
    """The teacher's embeddings of a shard's photos, one record per shard record, in order."""
    return Path(f"{shard}.{teacher}.tfrecord")


def teacher_cached(shard: str | Path, teacher: str, records: int) -> bool:
    """True when the shard's teacher file was written by ``teacher`` for exactly its ``records``;
    a file from another teacher, of another size or for other photos is recomputed."""
    meta = Path(f"{teacher_path(shard, teacher)}.json")
    if not meta.exists() or not teacher_path(shard, teacher).exists():
        return False
    try:
        info = json.loads(meta.read_text())
    except ValueError:
        return False
    from trainer.teacher import DlibTeacher

    return info.get("teacher") == teacher and info.get("dim") == DlibTeacher.dim and info.get("records") == records


def write_teacher(shard: str, teacher: str, vectors: list, dim: int) -> None:
    """Teacher records (``teacher`` [2*dim]: face and mirror image; ``has_teacher``), written aside
    and renamed, then their metadata: a half-written file is never taken for a cached one."""
    import tensorflow as tf

    target = teacher_path(shard, teacher)
    Path(f"{target}.json").unlink(missing_ok=True)
    with tf.io.TFRecordWriter(f"{target}.{os.getpid()}.tmp") as writer:
        for vec in vectors:
            values = np.zeros(2 * dim, np.float32) if vec is None else vec.reshape(-1)
            feature = {"teacher": tf.train.Feature(float_list=tf.train.FloatList(value=values)),
                       "has_teacher": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(vec is not None)]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    Path(f"{target}.{os.getpid()}.tmp").rename(target)
    Path(f"{target}.json").write_text(json.dumps({"teacher": teacher, "dim": dim, "records": len(vectors),
                                                  "failed": sum(v is None for v in vectors)}))


