"""Forward and training FLOPs of an embedding model, counted by TensorFlow's profiler.

``forward_flops`` freezes the model's inference function at batch 1 (variables folded into
constants, so only the forward graph remains) and sums the ``flops`` statistic that TensorFlow
registers per op type (``tf.compat.v1.profiler`` with the ``float_operation`` options), the usual
way Keras model FLOPs are reported.

Units: the profiler counts a multiply-add as **2** FLOPs (Conv2D: 2 * kh * kw * c_in per output
element; MatMul likewise), plus one per element for element-wise ops it knows (bias adds,
pooling, ...). Op types without a registered statistic (e.g. LRN, fused batch norm) count 0, a
negligible share for these nets. The FaceNet paper's "FLOPS" (Table 2: NN2 1.6B at 224x224) are
multiply-adds, so paper figure ~= ``forward_flops / 2``: expect about 3.2G for NN2.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

# Profiling builds and walks a whole graph (seconds for NN2); results only depend on the
# architecture, so one count per (model name, input size, embedding dim) serves the process.
_CACHE: dict[tuple[str, int, int], int] = {}


def forward_flops(model: keras.Model, input_size: int | None = None) -> int:
    """FLOPs (multiply-add = 2) of one forward pass of one image at ``input_size`` (default: the model's)."""
    size = int(input_size or model.input_shape[1])
    key = (model.name, size, int(model.output_shape[-1]))
    if key not in _CACHE:
        _CACHE[key] = _profile(model, size)
    return _CACHE[key]


def _profile(model: keras.Model, size: int) -> int:
    spec = tf.TensorSpec([1, size, size, 3], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build())
    # The profiler reads the graph's static shapes; a fresh graph keeps it from seeing anything else.
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        stats = tf.compat.v1.profiler.profile(
            graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options)
    return int(stats.total_float_ops)


def training_flops(forward_flops_per_image: int, images: int) -> int:
    """FLOPs to train on ``images`` images: 3 x forward per image.

    The backward pass of a conv or dense layer computes two products the size of the forward
    one (gradient w.r.t. the inputs and w.r.t. the weights), so forward + backward ~= 3 x forward;
    the usual estimate (e.g. Kaplan et al. 2020, "6N per token" = 3 x 2N). Optimizer updates and
    the triplet loss are per-parameter or per-batch, negligible next to it.
    """
    return 3 * int(forward_flops_per_image) * int(images)
