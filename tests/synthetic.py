"""Synthetic identity folders for fast pipeline and training tests.

Each identity is a fixed random low-frequency colour pattern (8×8 upsampled); its photos are
that pattern shifted by a few pixels with brightness jitter and noise. Identities are therefore
separable, but only by learning: a random tiny model scores near chance on them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def identity_pattern(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)


def photo(pattern: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shifted = np.roll(pattern, rng.integers(-3, 4, 2), axis=(0, 1))
    noisy = shifted * rng.uniform(0.8, 1.2) + rng.normal(0, 12, pattern.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def make_identity_folders(root: Path, identities: int = 12, images: int = 6, size: int = 48, seed: int = 0) -> Path:
    """Write ``root/person_XX/NN.jpg``; returns root."""
    rng = np.random.default_rng(seed)
    for i in range(identities):
        folder = root / f"person_{i:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pattern = identity_pattern(seed * 1000 + i, size)
        for j in range(images):
            Image.fromarray(photo(pattern, rng)).save(folder / f"{j:02d}.jpg", quality=92)
    return root


def write_shard(path: Path, identity: str, images: np.ndarray) -> str:
    """One identity's photos as a TFRecord shard in the trainer's format (image JPEG, identity,
    source), as prepare writes them; returns the path."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, image in enumerate(images):
            feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_jpeg(image).numpy()])),
                       "identity": tf.train.Feature(bytes_list=tf.train.BytesList(value=[identity.encode()])),
                       "source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"{identity}/{i}.jpg".encode()]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)
