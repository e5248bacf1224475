"""A tiny conv net (~0.12M params, ~30 MFLOPs at 64x64) for tests and CPU smoke runs.

Not meant to recognise faces well: it exists so the training loop, triplet mining, checkpoints,
enrolment and export can be exercised end to end in seconds. Only built-in layers, so its
SavedModel needs no custom objects.
"""
from __future__ import annotations

import tf_keras as keras

from trainer.models.layers import conv_bn_relu, embedding_head, pixel_input

L = keras.layers

# Filters of each conv-BN-ReLU block; every block but the last halves the resolution
# (64 -> 32 -> 16 -> 8), doubling channels as it goes, the usual VGG-style trade.
FILTERS = (16, 32, 64, 128)


def build_tiny(embedding_dim: int = 128, input_size: int = 64) -> keras.Model:
    """Tiny net mapping (None, S, S, 3) pixels in [0, 255] to L2-normalised (None, embedding_dim)."""
    inputs, x = pixel_input(input_size)
    for i, filters in enumerate(FILTERS):
        x = conv_bn_relu(x, filters, 3, name=f"block{i + 1}")
        if i < len(FILTERS) - 1:
            x = L.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
    return keras.Model(inputs, embedding_head(x, embedding_dim), name="tiny")
