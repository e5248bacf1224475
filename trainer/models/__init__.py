"""Embedding models: pixels in [0, 255] -> L2-normalised float32 embeddings.

``build_model(config.model.name, config.model.embedding_dim, config.model.input_size)`` is the one
entry point the trainer, enrolment and export use; ``inference_model`` (trainer/models/mirror.py)
wraps a trained network for evaluation and export; ``inference_graph`` traces its call. Importing this package registers the custom
layers a saved model names, so ``keras.models.load_model`` loads it.
"""
from __future__ import annotations

import tf_keras as keras

from trainer.models.dlib_resnet import build_dlib_resnet
from trainer.models.mirror import inference_model
from trainer.models.nn1 import build_nn1
from trainer.models.nn2 import build_nn2
from trainer.models.nn4_small2 import build_nn4_small2, build_nn4_small2_bn
from trainer.models.tiny import build_tiny

NATIVE_INPUT_SIZE = {"dlib_resnet": 150, "nn1": 220, "nn2": 224, "nn4_small2": 96, "nn4_small2_bn": 96, "tiny": 64}

_BUILDERS = {"dlib_resnet": build_dlib_resnet, "nn1": build_nn1, "nn2": build_nn2, "nn4_small2": build_nn4_small2, "nn4_small2_bn": build_nn4_small2_bn, "tiny": build_tiny}


def build_model(name: str, embedding_dim: int = 128, input_size: int = 0) -> keras.Model:
    """Build model ``name`` at ``input_size`` (0 = its native size, see NATIVE_INPUT_SIZE)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name](embedding_dim=embedding_dim, input_size=input_size or NATIVE_INPUT_SIZE[name])


def inference_graph(model):
    """``model``'s inference call as one traced graph for any batch size (what its SavedModel serves):
    called eagerly, Keras runs layer by layer from Python, ~10x slower a photo at batch 1."""
    import tensorflow as tf

    shape = tuple(model.input_shape[1:])
    signature = [tf.TensorSpec((None, *shape), tf.float32)] if None not in shape else None
    return tf.function(lambda images: model(images, training=False), input_signature=signature,
                       autograph=False, reduce_retracing=True)


__all__ = ["NATIVE_INPUT_SIZE", "build_model", "inference_graph", "inference_model", "build_dlib_resnet", "build_nn1", "build_nn2", "build_nn4_small2", "build_nn4_small2_bn", "build_tiny"]
