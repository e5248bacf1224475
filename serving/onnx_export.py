"""ONNX export of an embedding model (tf2onnx), and a runner for it (ONNX Runtime).

    python -m serving.export --run runs/<run> --onnx facenet.onnx

The graph holds the model handed in (a run's inference model: mirror-averaged by default): input
``images`` float32 [N, S, S, 3] RGB pixels in [0, 255], output ``embeddings`` float32 [N, D],
L2-normalised; float32 only (quantised edge models are TFLite's, ``serving.tflite``). tf2onnx 1.17
converts every op of nn4_small2 and tiny at opset 17 (within 2e-7 of Keras on the trained
nn4_small2 run). tf2onnx, onnx and onnxruntime come with the [serving] extra; without them the export
is refused with a one-line error.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

OPSET = 17


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"ONNX export needs {module} (pip install -e '.[serving]'): {exc}") from exc


def convert(model) -> bytes:
    """The serialised ONNX model of ``model`` (pixels [0, 255] -> embeddings)."""
    import tensorflow as tf

    tf2onnx = _require("tf2onnx")
    size = model.input_shape[1]
    if not size:
        raise ValueError("the model's input size is not fixed: an ONNX model needs one")
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name="images")]

    @tf.function(input_signature=spec)
    def embeddings(images):
        return {"embeddings": model(images, training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(embeddings, input_signature=spec, opset=OPSET)
    except Exception as exc:  # tf2onnx raises plain exceptions for unsupported ops
        raise ValueError(f"ONNX conversion failed: {exc}") from exc
    return proto.SerializeToString()


def write_onnx(model, path) -> dict:
    """Convert ``model`` and write it to ``path`` atomically; returns {path, bytes}."""
    from serving.tflite import write_atomically

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--onnx {path} is a directory: give a file name (e.g. facenet.onnx)")
    data = convert(model)
    write_atomically(path, data)
    return {"path": str(path), "bytes": len(data)}


class OnnxEmbedder:
    """An ONNX embedding model on ONNX Runtime's CPU provider: ``embed(images)`` in batches."""

    def __init__(self, model, num_threads: int | None = None):
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or os.cpu_count() or 1
        source = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types
            raise ValueError(f"not an ONNX model: {exc}") from exc
        self._input = self.session.get_inputs()[0]
        self.image_size = int(self._input.shape[1])
        self.embedding_dim = int(self.session.get_outputs()[0].shape[-1])

    def embed(self, images, batch_size: int = 32) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected images [N, {self.image_size}, {self.image_size}, 3], got {list(images.shape)}")
        if not len(images):
            return np.zeros((0, self.embedding_dim), np.float32)
        return np.concatenate([self.session.run(None, {self._input.name: images[i:i + batch_size]})[0]
                               for i in range(0, len(images), batch_size)])

    __call__ = embed
