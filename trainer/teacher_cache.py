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


def teacher_features() -> dict:
    """The tf.train.Example spec of a teacher record (what ``write_teacher`` writes)."""
    import tensorflow as tf

    return {"teacher": tf.io.VarLenFeature(tf.float32), "has_teacher": tf.io.FixedLenFeature([], tf.int64)}


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


def read_teacher(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A teacher file's records: ``[records, 2, dim]`` vectors (the face, its mirror image; zeros
    where the teacher failed) and a flag per record, False where it failed."""
    import tensorflow as tf

    from trainer.teacher import DlibTeacher

    features = teacher_features()
    rows, ok = [], []
    for record in tf.data.TFRecordDataset(str(path)):
        example = tf.io.parse_single_example(record, features)
        rows.append(tf.sparse.to_dense(example["teacher"]).numpy())
        ok.append(bool(example["has_teacher"]))
    return np.array(rows, np.float32).reshape(-1, 2, DlibTeacher.dim), np.array(ok, bool)


def cached_embeddings(shards: list[str], teacher: str) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's cached embeddings (of the unflipped face) of every record of ``shards``, in the
    order ``pipeline.ordered_images`` reads them, and a flag per row: False where it failed."""
    vectors, flags = [], []
    for shard in shards:
        path = teacher_path(shard, teacher)
        if not path.exists():
            raise FileNotFoundError(f"no {teacher} embeddings cached for {shard}: prepare with train.teacher={teacher}")
        both, ok = read_teacher(path)
        vectors.append(both[:, 0])
        flags.append(ok)
    from trainer.teacher import DlibTeacher

    return (np.concatenate(vectors) if vectors else np.zeros((0, DlibTeacher.dim), np.float32),
            np.concatenate(flags) if flags else np.zeros(0, bool))
