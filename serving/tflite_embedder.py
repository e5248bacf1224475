"""Run a TFLite (LiteRT) embedding model (``serving.tflite``) on batches of aligned crops.

    from serving.tflite_embedder import TFLiteEmbedder
    embedder = TFLiteEmbedder("facenet.tflite")          # or the flatbuffer's bytes
    vectors = embedder.embed(crops)                     # float32 [N, S, S, 3] in [0, 255] -> [N, D]

The interpreter is LiteRT's (``ai_edge_litert``, the [serving] extra) when installed, else
TensorFlow's ``tf.lite.Interpreter`` (deprecated in favour of LiteRT, still in TF 2.21); both apply
the XNNPACK delegate on CPU. Outputs are re-normalised to unit length: an int8 model's
``L2_NORMALIZATION`` answers within ~0.5 % of 1, and every caller assumes unit vectors.

``embed_dataset`` is ``trainer.evaluate.embed`` for a TFLite model, so the evaluation that needs no
enrolment (``trainer.evaluate.evaluate_embeddings``) scores it exactly as it scores a Keras model.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np


def interpreter_class():
    """LiteRT's Interpreter, or TensorFlow's when ai-edge-litert is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


class TFLiteEmbedder:
    """A TFLite embedding model: ``embed(images)`` in batches, resizing the batch dimension as needed."""

    def __init__(self, model, num_threads: int | None = None):
        Interpreter = interpreter_class()
        source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else \
            {"model_path": str(model)}
        if not source.get("model_content", True):
            raise ValueError("not a TFLite model: empty")
        if "model_path" in source and not Path(source["model_path"]).is_file():
            raise FileNotFoundError(f"no TFLite model at {source['model_path']}")
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice, once per model
            warnings.simplefilter("ignore", UserWarning)
            try:
                self.interpreter = Interpreter(**source, num_threads=num_threads or os.cpu_count() or 1)
            except ValueError as exc:
                raise ValueError(f"not a TFLite model: {exc}") from exc
        (inp,), outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(outputs) != 1 or len(inp["shape"]) != 4 or inp["shape"][3] != 3:
            raise ValueError(f"not an embedding model: input {inp['shape'].tolist()}, {len(outputs)} outputs")
        self._input, self._output = inp["index"], outputs[0]["index"]
        self.image_size = int(inp["shape"][1])
        self.embedding_dim = int(outputs[0]["shape"][-1])
        self._batch = None

    def _run(self, images: np.ndarray) -> np.ndarray:
        if images.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self._input, list(images.shape))
            self.interpreter.allocate_tensors()
            self._batch = images.shape[0]
        self.interpreter.set_tensor(self._input, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output)

    def embed(self, images, batch_size: int = 32) -> np.ndarray:
        """Unit-length embeddings float32 [N, D] of pixels [N, S, S, 3] in [0, 255]."""
        images = np.asarray(images, np.float32)
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected images [N, {size}, {size}, 3], got {list(images.shape)}")
        if not len(images):
            return np.zeros((0, self.embedding_dim), np.float32)
        out = np.concatenate([self._run(np.ascontiguousarray(images[i:i + batch_size]))
                              for i in range(0, len(images), batch_size)])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)

    __call__ = embed


def embed_dataset(embedder: TFLiteEmbedder, dataset, batch_size: int = 32):
    """(embeddings, identities, sources) of an ``ordered_images`` dataset, as ``trainer.evaluate.embed``."""
    embeddings, identities, sources = [], [], []
    for batch in dataset:
        embeddings.append(embedder.embed(batch["image"].numpy(), batch_size))
        identities += [s.decode() for s in batch["identity"].numpy()]
        sources += [s.decode() for s in batch["source"].numpy()]
    return (np.concatenate(embeddings) if embeddings else np.zeros((0, embedder.embedding_dim), np.float32),
            identities, sources)
