"""OpenFace's nn4.small2 (v1): NN4 without 4b-4d and with smaller 5a/5b, at 96x96 (~3.7M params).

Follows cmusatyalab/openface ``models/openface/nn4.small2.def.lua`` (3,733,968 Torch parameters at
embedding 128). The stem (conv1, pool + LRN, inception (2), LRN + pool) is NN2's. Differences from
the Torch definition, none of which changes the parameter count by more than a fraction of a
percent:

* convolutions carry no bias (batch norm's beta replaces it);
* non-reducing modules pool 3x3 stride 1 with "same" padding; OpenFace pools 3x3/2 and
  zero-pads the smaller map back to size in DepthConcat (a Torch artefact, reproduced literally
  by the Keras-OpenFace port only to load its weights, which this project does not do);
* L2 pooling is the root of the window *mean* of squares, not the sum (a factor of 3 that the
  projection's batch norm absorbs);
* the final 3x3 average pool is global, so other input sizes work too.
"""
from __future__ import annotations

import tf_keras as keras

from trainer.models.layers import bn_embedding_head, embedding_head, inception, pixel_input
from trainer.models.nn2 import stem

# Same columns as nn2.TABLE2: name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool, proj, stride.
# Read from the Lua ``reduceSize`` = {3x3 reduce, 5x5 reduce, pool proj, 1x1} of each module.
MODULES = (
    ("3a", 64, 96, 128, 16, 32, "max", 32, 1),
    ("3b", 64, 96, 128, 32, 64, "l2", 64, 1),
    ("3c", 0, 128, 256, 32, 64, "max", 0, 2),
    ("4a", 256, 96, 192, 32, 64, "l2", 128, 1),
    ("4e", 0, 160, 256, 64, 128, "max", 0, 2),
    # 5a/5b drop the 5x5 branch and shrink to 256 + 384 + 96 = 736 channels.
    ("5a", 256, 96, 384, 0, 0, "l2", 96, 1),
    ("5b", 256, 96, 384, 0, 0, "max", 96, 1),
)


def build_nn4_small2(embedding_dim: int = 128, input_size: int = 96, bn_head: bool = False) -> keras.Model:
    """nn4.small2 mapping (None, S, S, 3) pixels in [0, 255] to L2-normalised (None, embedding_dim);
    ``bn_head``: insightface's regularised output block (layers.bn_embedding_head) as its head."""
    inputs, x = pixel_input(input_size)
    x = stem(x)
    for name, *columns in MODULES:
        x = inception(x, f"inception_{name}", *columns)
    head = bn_embedding_head if bn_head else embedding_head
    return keras.Model(inputs, head(x, embedding_dim), name="nn4_small2_bn" if bn_head else "nn4_small2")


def build_nn4_small2_bn(embedding_dim: int = 128, input_size: int = 96) -> keras.Model:
    """nn4.small2 with insightface's output block (BN, dropout 0.4, FC, BN) as its embedding head."""
    return build_nn4_small2(embedding_dim, input_size, bn_head=True)
