"""tf.data input: identity-balanced P×K training batches and ordered evaluation batches.

Each identity lives in its own TFRecord shard (prepare.py), so a P×K batch is an interleave:
shuffle the shard list, open P shards at a time and take exactly K records from each
(``cycle_length=P, block_length=K``). Identities with fewer than K photos repeat theirs.
Decoding, augmentation and batching run in parallel and are prefetched, so a CPU-bound model
step never waits on JPEG decoding.

Images come out as float32 RGB in [0, 255]: the models rescale internally.
"""
from __future__ import annotations

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "identity": tf.io.FixedLenFeature([], tf.string),
    "source": tf.io.FixedLenFeature([], tf.string),
}


def parse(record: tf.Tensor, size: int) -> dict[str, tf.Tensor]:
    example = tf.io.parse_single_example(record, _FEATURES)
    image = tf.io.decode_jpeg(example["image"], channels=3)
    image = tf.image.resize(image, (size, size)) if image.shape[0] != size else tf.cast(image, tf.float32)
    image = tf.ensure_shape(tf.cast(image, tf.float32), (size, size, 3))
    return {"image": image, "identity": example["identity"], "source": example["source"]}


def augment(image: tf.Tensor, size: int) -> tf.Tensor:
    """Flip, scale/translation jitter (up to 12.5%) and colour jitter, as used for face embeddings."""
    image = tf.image.random_flip_left_right(image)
    scale = tf.random.uniform([], 1.0, 1.125)
    grown = tf.cast(tf.round(scale * size), tf.int32)
    image = tf.image.resize(image, (grown, grown))
    image = tf.image.random_crop(image, (size, size, 3))
    image = tf.image.random_brightness(image, 0.1 * 255.0)
    image = tf.image.random_contrast(image, 0.8, 1.2)
    image = tf.image.random_saturation(image, 0.8, 1.2)
    return tf.clip_by_value(image, 0.0, 255.0)


def pk_batches(shards: list[str], labels: list[int], identities_per_batch: int, images_per_identity: int,
               size: int, training_augment: bool = True, seed: int | None = None) -> tf.data.Dataset:
    """Endless dataset of (images [P*K, size, size, 3], labels [P*K]) with P identities × K images."""
    p, k = identities_per_batch, images_per_identity
    if len(shards) < p:
        raise ValueError(f"P×K batches need at least P={p} identities, the training split has {len(shards)}")
    files = tf.data.Dataset.from_tensor_slices((list(shards), tf.constant(labels, tf.int32)))
    files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True).repeat()

    def k_records(path, label):
        records = tf.data.TFRecordDataset(path).shuffle(64, seed=seed).repeat().take(k)
        return records.map(lambda r: (r, label))

    # deterministic=True keeps blocks of K contiguous, which is what makes batches P×K.
    ds = files.interleave(k_records, cycle_length=p, block_length=k, num_parallel_calls=AUTOTUNE, deterministic=True)

    def decode(record, label):
        image = parse(record, size)["image"]
        return (augment(image, size) if training_augment else image), label

    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(p * k, drop_remainder=True).prefetch(AUTOTUNE)


def ordered_images(shards: list[str], size: int, batch_size: int = 128) -> tf.data.Dataset:
    """Every record of ``shards`` in order, unaugmented: dicts with image, identity and source."""
    ds = tf.data.TFRecordDataset(list(shards), num_parallel_reads=1)
    return ds.map(lambda r: parse(r, size), num_parallel_calls=AUTOTUNE, deterministic=True) \
        .batch(batch_size).prefetch(AUTOTUNE)
