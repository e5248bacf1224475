"""FaceNet's NN2: the Inception network of Schroff et al. 2015, Table 2 (224x224, ~7.5M params).

The straightforward reading of Table 2 reproduces the paper's per-layer parameter column (e.g.
3c: 398K, 5a: 1.6M) and its 7.5M total, so no adjustment was needed. What the table leaves open,
decided as in practice (GoogLeNet, OpenFace):

* "norm" is cross-channel LRN (GoogLeNet's, Torch parameters size 5, alpha 1e-4, beta 0.75);
* every convolution is followed by batch norm and ReLU, and has no bias (BN's beta replaces it);
* pooling inside a module is 3x3, stride 1 ("same" padding) unless the table gives stride 2;
* "avg pool" is global, so the network also runs at other input sizes.

At 224x224 the table's FLOPS column (multiply-adds) sums to 1.6B; ``trainer.flops`` counts one
multiply-add as 2 FLOPs, so expect about 3.2G from it.
"""
from __future__ import annotations

import tf_keras as keras

from trainer.models.layers import (LocalResponseNormalization, conv_bn_relu, embedding_head, inception,
                                   pixel_input)

L = keras.layers

# Table 2, one row per inception module:
#   name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool, pool proj, stride (of 3x3, 5x5, pool)
TABLE2 = (
    ("3a", 64, 96, 128, 16, 32, "max", 32, 1),
    ("3b", 64, 96, 128, 32, 64, "l2", 64, 1),
    ("3c", 0, 128, 256, 32, 64, "max", 0, 2),
    ("4a", 256, 96, 192, 32, 64, "l2", 128, 1),
    ("4b", 224, 112, 224, 32, 64, "l2", 128, 1),
    ("4c", 192, 128, 256, 32, 64, "l2", 128, 1),
    ("4d", 160, 144, 288, 32, 64, "l2", 128, 1),
    ("4e", 0, 160, 256, 64, 128, "max", 0, 2),
    ("5a", 384, 192, 384, 48, 128, "l2", 128, 1),
    ("5b", 384, 192, 384, 48, 128, "max", 128, 1),
)


def stem(x):
    """conv1, max pool + norm, inception (2), norm + max pool: Table 2 up to 3a (shared with nn4)."""
    x = conv_bn_relu(x, 64, 7, strides=2, name="conv1")
    x = L.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = LocalResponseNormalization(name="norm1")(x)
    # "inception (2)" has only a 1x1 reduce and a 3x3: a plain two-conv layer, depth 2.
    x = conv_bn_relu(x, 64, 1, name="inception2_3x3_reduce")
    x = conv_bn_relu(x, 192, 3, name="inception2_3x3")
    x = LocalResponseNormalization(name="norm2")(x)
    return L.MaxPooling2D(3, 2, padding="same", name="pool2")(x)


def build_nn2(embedding_dim: int = 128, input_size: int = 224) -> keras.Model:
    """NN2 mapping (None, S, S, 3) pixels in [0, 255] to L2-normalised (None, embedding_dim)."""
    inputs, x = pixel_input(input_size)
    x = stem(x)
    for name, *columns in TABLE2:
        x = inception(x, f"inception_{name}", *columns)
    return keras.Model(inputs, embedding_head(x, embedding_dim), name="nn2")
