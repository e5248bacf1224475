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

from trainer.teacher_cache import teacher_features

AUTOTUNE = tf.data.AUTOTUNE
RECORD_FEATURES = {  # a shard record (trainer/identity_shard.crop_record)
    "image": tf.io.FixedLenFeature([], tf.string),
    "identity": tf.io.FixedLenFeature([], tf.string),
    "source": tf.io.FixedLenFeature([], tf.string),
}


def parse(record: tf.Tensor, size: int) -> dict[str, tf.Tensor]:
    example = tf.io.parse_single_example(record, RECORD_FEATURES)
    image = tf.io.decode_jpeg(example["image"], channels=3)
    image = tf.image.resize(image, (size, size)) if image.shape[0] != size else tf.cast(image, tf.float32)
    image = tf.ensure_shape(tf.cast(image, tf.float32), (size, size, 3))
    return {"image": image, "identity": example["identity"], "source": example["source"]}


SHUFFLE_RECORDS = 1024


def augment(image: tf.Tensor, size: int, flip: tf.Tensor | None = None, strong: bool = False) -> tf.Tensor:
    """Flip, scale/translation jitter (up to 12.5%) and colour jitter, as used for face embeddings;
    ``strong`` adds small rotations, greyscale (20 %) and blur (20 %).

    ``flip`` (a bool tensor) decides the mirror image when the caller must know it (a teacher's
    target for the flipped face); otherwise it is drawn here.
    """
    flip = tf.random.uniform([]) < 0.5 if flip is None else flip
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    scale = tf.random.uniform([], 1.0, 1.125)
    grown = tf.cast(tf.round(scale * size), tf.int32)
    image = tf.image.resize(image, (grown, grown))
    image = tf.image.random_crop(image, (size, size, 3))
    if strong:
        image = _rotate(image, tf.random.uniform([], -0.17, 0.17))  # about ±10°
        grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
        image = tf.where(tf.random.uniform([]) < 0.2, grey, image)
        blurred = tf.nn.avg_pool2d(image[None], 3, 1, "SAME")[0]
        image = tf.where(tf.random.uniform([]) < 0.2, blurred, image)
    image = tf.image.random_brightness(image, 0.1 * 255.0)
    image = tf.image.random_contrast(image, 0.8, 1.2)
    image = tf.image.random_saturation(image, 0.8, 1.2)
    return tf.clip_by_value(image, 0.0, 255.0)


def _rotate(image: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """Rotate about the centre by ``angle`` radians (reflected border), with a projective transform."""
    size = tf.cast(tf.shape(image)[0], tf.float32)
    cos, sin, centre = tf.cos(angle), tf.sin(angle), (size - 1) / 2
    transform = [cos, -sin, centre - cos * centre + sin * centre, sin, cos, centre - sin * centre - cos * centre, 0., 0.]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.stack(transform)[None], output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")[0]


def pk_batches(shards: list[str], labels: list[int], identities_per_batch: int, images_per_identity: int,
               size: int, training_augment: bool = True, seed: int | None = None, teacher: str = "",
               weights: list[float] | None = None, strong: bool = False, views: int = 0) -> tf.data.Dataset:
    """Endless dataset of (images [P*K, size, size, 3], labels [P*K]) with P identities × K images.

    With ``teacher`` each element is (images, labels, teacher embeddings [P*K, dim], has_teacher
    [P*K]): the teacher's file beside each shard (trainer/teacher_cache.py) is read in step with it,
    and a flipped crop gets the teacher's embedding of the mirror image. ``weights`` (one per
    shard) make an identity's chance of being drawn proportional to its weight. A label of -1
    marks a shard of unlabeled photos: each gets a label of its own. ``views`` (with ``teacher``):
    a person's K photos are drawn from their photos and the augmented views beside each shard
    (trainer/teacher_views.py), each with the teacher's embedding of that view.
    """
    p, k = identities_per_batch, images_per_identity
    if len(shards) < p:
        raise ValueError(f"P×K batches need at least P={p} identities, the training split has {len(shards)}")
    draws = tf.data.Dataset.random(seed=seed)  # one seed per draw of a person (see k_records)
    files = tf.data.Dataset.zip((_identity_stream(list(shards), list(labels), weights, seed), draws))
    files = files.map(lambda person, draw_seed: (*person, draw_seed))

    def k_records(path, label, draw_seed):
        paths = tf.stack([path, tf.strings.join([path, f".views{views}.tfrecord"])]) if views else path
        records = tf.data.TFRecordDataset(paths)
        if teacher:
            records = tf.data.Dataset.zip((records, tf.data.TFRecordDataset(tf.strings.join([paths, f".{teacher}.tfrecord"]))))
        else:
            records = records.map(lambda r: (r, tf.constant(b"")))

        # K photos drawn from the whole shard (up to SHUFFLE_RECORDS), in an order of this draw's own
        # seed: a shuffle seeded by the run's seed would take the same K photos at every draw.
        def pick(record, teacher_record):
            n = tf.shape(record)[0]
            order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([draw_seed, 0]))
            order = tf.tile(order, [(k + n - 1) // n])[:k]  # fewer than K photos: they repeat
            return tf.gather(record, order), tf.gather(teacher_record, order)

        return records.batch(SHUFFLE_RECORDS).take(1).map(pick).unbatch().map(lambda r, t: (r, t, label))

    # deterministic=True keeps blocks of K contiguous, which is what makes batches P×K.
    ds = files.interleave(k_records, cycle_length=p, block_length=k, num_parallel_calls=AUTOTUNE, deterministic=True)

    def decode(record, teacher_record, label):
        # label -1 (an unlabeled source): a fresh negative label per photo, so the triplet loss finds
        # no positive for it and only the distillation term learns from it
        label = tf.where(label < 0, -tf.random.uniform([], 2, 2**30, tf.int32), label)
        image = parse(record, size)["image"]
        flip = tf.random.uniform([]) < 0.5
        image = augment(image, size, flip, strong) if training_augment else image
        if not teacher:
            return image, label
        example = tf.io.parse_single_example(teacher_record, teacher_features())
        both = tf.reshape(tf.sparse.to_dense(example["teacher"]), (2, -1))
        target = tf.where(flip, both[1], both[0]) if training_augment else both[0]
        return image, label, target, tf.cast(example["has_teacher"], tf.float32)

    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(p * k, drop_remainder=True).prefetch(AUTOTUNE)


def _identity_stream(shards: list[str], labels: list[int], weights: list[float] | None, seed) -> tf.data.Dataset:
    """Endless (shard, label) stream, shuffled; with ``weights``, identities of each weight class are
    drawn in proportion to weight × their number."""
    def stream(indices):
        ds = tf.data.Dataset.from_tensor_slices(([shards[i] for i in indices], tf.constant([labels[i] for i in indices], tf.int32)))
        return ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True).repeat()

    if not weights or len(set(weights)) == 1:
        return stream(range(len(shards)))
    groups: dict[float, list[int]] = {}
    for i, w in enumerate(weights):
        groups.setdefault(float(w), []).append(i)
    share = [w * len(ix) for w, ix in groups.items()]
    return tf.data.Dataset.sample_from_datasets([stream(ix) for ix in groups.values()],
                                                weights=[x / sum(share) for x in share], seed=seed)


def ordered_images(shards: list[str], size: int, batch_size: int = 128) -> tf.data.Dataset:
    """Every record of ``shards`` in order, unaugmented: dicts with image, identity and source."""
    ds = tf.data.TFRecordDataset(list(shards), num_parallel_reads=1)
    return ds.map(lambda r: parse(r, size), num_parallel_calls=AUTOTUNE, deterministic=True) \
        .batch(batch_size).prefetch(AUTOTUNE)
