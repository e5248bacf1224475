"""FaceNet's NN1: the Zeiler&Fergus-based network of Schroff et al. 2015, Table 1 (220x220, ~140M params).

A plain stack of convolutions with 1x1 "a" layers in between (Lin et al.'s network-in-network idea),
then three fully connected layers; 140M parameters and 1.6B multiply-adds per image in the paper,
almost all of the parameters in fc1 (7x7x256 -> 2 x 4096). What the table leaves open, decided as
NN2 decides it (trainer/models/nn2.py):

* every convolution is followed by batch norm and ReLU and has no bias; "rnorm" is cross-channel LRN;
* pools are 3x3 max, stride 2, "same" padding (220 -> 110 -> 55 -> 28 -> 14 -> 7, the table's sizes);
* "maxout p=2" is a dense layer of 2 x 4096 units followed by the max of each consecutive pair
  (Goodfellow et al. 2013), giving the table's 1x32x128 = 4096 outputs;
* the table's "concat" (7x7x256 in and out) joins towers trained on separate machines: one tower
  here, so it is the identity and is left out.

Unlike NN2 there is no global pooling: fc1 flattens the 7x7 map, so the network is built for one
input size (220 natively; another ``input_size`` changes fc1's size). At 220x220 the table's
FLOPS column (multiply-adds) sums to 1.6B; ``trainer.flops`` counts one multiply-add as 2 FLOPs,
so expect about 3.2G from it. Exercised by tests (size, FLOPs, one training step), not trained here.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from trainer.models.layers import LocalResponseNormalization, conv_bn_relu, pixel_input

L = keras.layers

# Table 1's convolutions after conv1 and pool1 + rnorm1: (name, filters, kernel); a pool follows
# conv2 (after rnorm2), conv3 and conv6.
CONVS = (("conv2a", 64, 1), ("conv2", 192, 3), ("conv3a", 192, 1), ("conv3", 384, 3), ("conv4a", 384, 1),
         ("conv4", 256, 3), ("conv5a", 256, 1), ("conv5", 256, 3), ("conv6a", 256, 1), ("conv6", 256, 3))
POOL_AFTER = {"conv2": "pool2", "conv3": "pool3", "conv6": "pool4"}
FC_UNITS = 32 * 128  # fc1 and fc2 output 1x32x128
MAXOUT_PIECES = 2


@keras.utils.register_keras_serializable(package="facenet")
class Maxout(L.Layer):
    """The max of each group of ``pieces`` consecutive units: [N, units * pieces] -> [N, units]."""

    def __init__(self, pieces: int = MAXOUT_PIECES, **kwargs):
        super().__init__(**kwargs)
        self.pieces = pieces

    def call(self, x):
        units = x.shape[-1] // self.pieces
        return tf.reduce_max(tf.reshape(x, [-1, units, self.pieces]), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.pieces)

    def get_config(self):
        return {**super().get_config(), "pieces": self.pieces}


def build_nn1(embedding_dim: int = 128, input_size: int = 220) -> keras.Model:
    """NN1 mapping (None, S, S, 3) pixels in [0, 255] to L2-normalised (None, embedding_dim)."""
    inputs, x = pixel_input(input_size)
    x = conv_bn_relu(x, 64, 7, strides=2, name="conv1")
    x = L.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = LocalResponseNormalization(name="rnorm1")(x)
    for name, filters, kernel in CONVS:
        x = conv_bn_relu(x, filters, kernel, name=name)
        if name == "conv2":
            x = LocalResponseNormalization(name="rnorm2")(x)
        if name in POOL_AFTER:
            x = L.MaxPooling2D(3, 2, padding="same", name=POOL_AFTER[name])(x)
    x = L.Flatten(name="flatten")(x)
    for name in ("fc1", "fc2"):
        x = Maxout(MAXOUT_PIECES, name=f"{name}_maxout")(L.Dense(FC_UNITS * MAXOUT_PIECES, name=name)(x))
    x = L.Dense(embedding_dim, name="fc7128")(x)
    # float32 like every model's head (layers.embedding_head): distances need full precision.
    outputs = L.UnitNormalization(axis=-1, dtype="float32", name="l2_norm")(x)
    return keras.Model(inputs, outputs, name="nn1")
