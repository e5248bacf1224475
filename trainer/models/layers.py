"""Building blocks shared by the embedding models: stem, conv-BN-ReLU, pooling, LRN, inception, head.

Every model follows the same contract: float32 RGB pixels in [0, 255] go in (the first layer
rescales them, so callers and the serving signature never preprocess) and an L2-normalised float32
embedding comes out, also under a ``mixed_float16`` policy. The two custom layers are registered
under the ``facenet`` package so a SavedModel loads back with plain ``keras.models.load_model``.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

L = keras.layers


def pixel_input(input_size: int, name: str = "image") -> tuple[keras.KerasTensor, tf.Tensor]:
    """The model input (raw pixels) and its rescaled version in [-1, 1] for the first conv."""
    inputs = keras.Input(shape=(input_size, input_size, 3), dtype="float32", name=name)
    return inputs, L.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)


def _several_replicas() -> bool:
    """True when built under a distribution strategy with more than one replica.

    Batch statistics are then computed over the global batch (all replicas), so training on N
    workers normalises exactly like one process on the same P×K batch, as the triplet loss does.
    """
    return tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1


def conv_bn_relu(x, filters: int, kernel: int, strides: int = 1, name: str = "conv"):
    # No conv bias: the BatchNormalization beta that follows makes it redundant.
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(synchronized=_several_replicas(), name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


@keras.utils.register_keras_serializable(package="facenet")
class L2Pooling2D(L.Layer):
    """FaceNet's "L2" pooling: sqrt(mean of x^2) over each window (Schroff et al. 2015, Table 2).

    Torch's SpatialLPPooling (OpenFace) takes the sqrt of the *sum*; that is this times
    pool_size, a constant the batch norm after the pooling projection absorbs.
    """

    def __init__(self, pool_size: int = 3, strides: int = 1, padding: str = "same",
                 epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides, self.padding, self.epsilon = pool_size, strides, padding, epsilon

    def call(self, x):
        # float32 inside: under mixed_float16 the squares of activations above ~256 overflow.
        x32 = tf.cast(x, tf.float32)
        mean_sq = tf.nn.avg_pool2d(tf.square(x32), self.pool_size, self.strides, self.padding.upper())
        # epsilon keeps the gradient of sqrt finite on all-zero windows (common after ReLU).
        return tf.cast(tf.sqrt(mean_sq + self.epsilon), x.dtype)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding, "epsilon": self.epsilon}


@keras.utils.register_keras_serializable(package="facenet")
class LocalResponseNormalization(L.Layer):
    """Cross-channel LRN (GoogLeNet's "norm"), with Torch/Caffe's parameterisation.

    Torch's SpatialCrossMapLRN(size=5, alpha=1e-4, beta=0.75, k=1), used by OpenFace, divides by
    (k + alpha/size * sum of squares over `size` channels)^beta; tf.nn.local_response_normalization
    takes a half-width and an unscaled alpha, hence the conversion in ``call``.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def call(self, x):
        # float32 for the same overflow reason as L2Pooling2D.
        y = tf.nn.local_response_normalization(
            tf.cast(x, tf.float32), depth_radius=self.size // 2, bias=self.k,
            alpha=self.alpha / self.size, beta=self.beta)
        return tf.cast(y, x.dtype)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}


def pool2d(x, kind: str, strides: int, name: str):
    """3x3 pooling of Table 2's "pool" column: ``"max"`` (m) or ``"l2"`` (L2)."""
    if kind == "max":
        return L.MaxPooling2D(3, strides, padding="same", name=name)(x)
    if kind == "l2":
        return L2Pooling2D(3, strides, name=name)(x)
    raise ValueError(f"unknown pool type {kind!r}; expected 'max' or 'l2'")


def inception(x, name: str, n1x1: int, n3x3_reduce: int, n3x3: int, n5x5_reduce: int, n5x5: int,
              pool: str, pool_proj: int, stride: int = 1):
    """An inception module with the columns of FaceNet's Table 2, in the same order.

    0 leaves a branch out (e.g. no 1x1 in 3c/4e, no 5x5 in nn4.small2's 5a). ``stride`` is the
    table's "(stride)" entry; it always appears on the 3x3, the 5x5 and the pool together, since a
    reducing module must shrink every branch alike for the concatenation. ``pool_proj`` 0 passes
    the pooled input through unprojected, as the reducing modules do.
    """
    branches = []
    if n1x1:
        branches.append(conv_bn_relu(x, n1x1, 1, name=f"{name}_1x1"))
    if n3x3:
        b = conv_bn_relu(x, n3x3_reduce, 1, name=f"{name}_3x3_reduce")
        branches.append(conv_bn_relu(b, n3x3, 3, strides=stride, name=f"{name}_3x3"))
    if n5x5:
        b = conv_bn_relu(x, n5x5_reduce, 1, name=f"{name}_5x5_reduce")
        branches.append(conv_bn_relu(b, n5x5, 5, strides=stride, name=f"{name}_5x5"))
    # Stride-1 pooling with "same" padding (GoogLeNet's choice). OpenFace pools 3x3/2 without
    # padding and zero-pads the result back in DepthConcat; the parameter count is identical.
    b = pool2d(x, pool, stride, name=f"{name}_pool")
    if pool_proj:
        b = conv_bn_relu(b, pool_proj, 1, name=f"{name}_pool_proj")
    branches.append(b)
    return L.Concatenate(name=f"{name}_concat")(branches)


def embedding_head(x, embedding_dim: int):
    """Global average pool, fully connected ``embedding_dim``, L2 normalisation (float32)."""
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.Dense(embedding_dim, name="fc")(x)
    # dtype float32 overrides a mixed policy: distances and the triplet margin need full precision.
    return L.UnitNormalization(axis=-1, dtype="float32", name="l2_norm")(x)


def bn_embedding_head(x, embedding_dim: int, dropout: float = 0.4):
    """insightface's output block "E" (Deng et al. 2019, table 7): batch norm, dropout, fully connected,
    batch norm, then L2 normalisation; the regularised head of the ``_bn`` models. Dropout acts only
    in training, so the inference graph is the plain head's with two affine maps folded in."""
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.BatchNormalization(synchronized=_several_replicas(), name="feature_bn")(x)
    x = L.Dropout(dropout, name="feature_dropout")(x)
    x = L.Dense(embedding_dim, use_bias=False, name="fc")(x)
    # No scale: insightface fixes gamma here (fc1's fix_gamma); L2 normalisation would undo a global one.
    x = L.BatchNormalization(synchronized=_several_replicas(), scale=False, name="embedding_bn")(x)
    return L.UnitNormalization(axis=-1, dtype="float32", name="l2_norm")(x)
