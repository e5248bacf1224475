"""Edge export: a TFLite (LiteRT) flatbuffer of an embedding model.

    python -m serving.export --run runs/<run> --tflite facenet.tflite [--quantize none|float16|int8]
                             [--representative RUN_OR_DIR]

The flatbuffer holds the model handed in (a run's inference model: mirror-averaged by default) with
one signature, ``serving_default``: ``images`` float32 [N, S, S, 3] RGB pixels in [0, 255] ->
``embeddings`` float32 [N, D], L2-normalised, as the SavedModel's ``serving_default`` (without its
in-graph resize: S is the model's input size). The batch dimension is dynamic.

Quantisation (``tf.lite.TFLiteConverter``, which TF 2.21 still ships):

* ``none``     float32 weights and activations.
* ``float16``  float16 weights (half the file), dequantised to float32 at load; float32 arithmetic.
* ``int8``     full-integer: int8 weights and activations (every op an int8 builtin, ~1/4 of the
               file), calibrated on a representative set of aligned crops; float32 in and out, so
               callers do not change. Without representative crops it is refused: a model
               calibrated on nothing would be silently wrong.

``representative_crops`` reads those crops from a training run (its own training shards, a few
from each of many identities), a folder of TFRecord shards, or a folder of aligned face crops.
``write_tflite`` converts first and writes to a hidden temporary file renamed into place, so a
failure leaves no file behind. ``serving.tflite_embedder`` runs the result.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.files import atomic_write

QUANTIZATIONS = ("none", "float16", "int8")
REPRESENTATIVE_CROPS = 160
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def representative_crops(source, image_size: int, limit: int = REPRESENTATIVE_CROPS) -> np.ndarray:
    """Up to ``limit`` aligned crops float32 [N, S, S, 3] in [0, 255] for int8 calibration.

    ``source``: a run directory (its plan's training shards, two photos from each of evenly spaced
    identities), a directory of ``*.tfrecord`` shards (the same), or a directory of aligned crops
    (images, resized to S; they are not detected or aligned here). Raises ValueError when it holds none.
    """
    from trainer.run_plan import PLAN_FILE, RunPlan

    source = Path(source)
    if not source.is_dir():
        raise ValueError(f"representative data {source} is not a directory (a run or a folder of crops)")
    if (source / PLAN_FILE).exists():
        shards = RunPlan.load(source).shards.train
    else:
        shards = sorted(str(p) for p in source.rglob("*.tfrecord"))
    if shards:
        crops = _crops_from_shards(shards, image_size, limit)
    else:
        crops = _crops_from_images(sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES),
                                   image_size, limit)
    if not len(crops):
        raise ValueError(f"no representative crops in {source} (expected a run, *.tfrecord shards or face images)")
    return crops


def _spread(items: list, count: int) -> list:
    """``count`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _crops_from_shards(shards: list[str], image_size: int, limit: int, per_shard: int = 2) -> np.ndarray:
    import tensorflow as tf

    from trainer import pipeline

    crops = []
    for shard in _spread(shards, max(1, -(-limit // per_shard))):
        try:
            for batch in pipeline.ordered_images([shard], image_size, batch_size=per_shard).take(1):
                crops.append(batch["image"].numpy())
        except tf.errors.OpError as exc:
            raise ValueError(f"cannot read representative shard {shard}: {exc.message}") from exc
    crops = np.concatenate(crops)[:limit] if crops else np.zeros((0, image_size, image_size, 3), np.float32)
    return crops.astype(np.float32)


def _crops_from_images(paths: list[Path], image_size: int, limit: int) -> np.ndarray:
    import tensorflow as tf

    crops = []
    for path in _spread(paths, limit):
        try:
            image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            continue  # not an image after all: skipped, as a folder of photos may hold anything
        crops.append(tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size)).numpy())
    return np.stack(crops).astype(np.float32) if crops else np.zeros((0, image_size, image_size, 3), np.float32)


def convert(model, quantize: str = "none", representative: np.ndarray | None = None) -> bytes:
    """The TFLite flatbuffer of ``model`` (pixels [0, 255] -> embeddings), quantised as asked."""
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    if quantize == "int8" and (representative is None or not len(representative)):
        raise ValueError("int8 quantisation needs representative data: --representative RUN_OR_DIR of aligned crops")
    size = model.input_shape[1]
    if not size:
        raise ValueError("the model's input size is not fixed: a TFLite model needs one")

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    def serving_default(images):
        return {"embeddings": model(images, training=False)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving_default.get_concrete_function()], model)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        crops = np.asarray(representative, np.float32)
        if crops.shape[1:] != (size, size, 3):
            raise ValueError(f"representative crops are {crops.shape[1:]}, the model takes ({size}, {size}, 3)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([crop[None]] for crop in crops)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises its own ConverterError and plain RuntimeErrors
        raise ValueError(f"TFLite conversion ({quantize}) failed: {exc}") from exc


def write_tflite(model, path, quantize: str = "none", representative: np.ndarray | None = None) -> dict:
    """Convert ``model`` and write it to ``path`` atomically; returns {path, quantize, bytes}."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--tflite {path} is a directory: give a file name (e.g. facenet.tflite)")
    flatbuffer = convert(model, quantize, representative)
    write_atomically(path, flatbuffer)
    return {"path": str(path), "quantize": quantize, "bytes": len(flatbuffer)}


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it into place (trainer/files.py)."""
    atomic_write(path, data)
