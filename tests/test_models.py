"""Embedding models: output contract, published sizes, FLOPs, serialisation, mixed precision."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer.flops import forward_flops, training_flops
from trainer.models import NATIVE_INPUT_SIZE, build_model
from trainer.models.layers import L2Pooling2D, LocalResponseNormalization, embedding_head, inception, pixel_input


def _pixels(batch, size, seed=0):
    # Real callers feed decoded uint8 images cast to float32: the full [0, 255] range, no preprocessing.
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8).astype(np.float32)


def _assert_unit_rows(emb, dim):
    emb = np.asarray(emb)
    assert emb.dtype == np.float32 and emb.shape[1] == dim
    assert np.all(np.isfinite(emb))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def nn2():
    # NN2 is the slowest to build and run; build it once for the module.
    return build_model("nn2")


@pytest.fixture(scope="module")
def nn4():
    return build_model("nn4_small2")


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny")


@pytest.mark.parametrize("name", ["nn2", "nn4_small2", "tiny"])
def test_native_size_output_is_unit_norm(name, request):
    model = request.getfixturevalue({"nn2": "nn2", "nn4_small2": "nn4", "tiny": "tiny"}[name])
    size = NATIVE_INPUT_SIZE[name]
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, 128)
    emb = model(_pixels(2, size), training=False)
    assert emb.shape == (2, 128)
    _assert_unit_rows(emb, 128)


def test_nn2_parameter_count_matches_paper(nn2):
    # Schroff et al. 2015, Table 2: 7.5M in total.
    assert abs(nn2.count_params() - 7.5e6) / 7.5e6 < 0.10


def test_nn4_small2_parameter_count_matches_openface(nn4):
    # nn4.small2.def.lua: 3,733,968 parameters with embSize=128.
    assert abs(nn4.count_params() - 3.7e6) / 3.7e6 < 0.10


def test_tiny_is_small(tiny):
    assert 50_000 <= tiny.count_params() <= 200_000


def test_nn2_flops_match_paper(nn2):
    # Paper: 1.6B multiply-adds at 224x224; the profiler counts 2 FLOPs per multiply-add, so
    # ~3.2G. The band allows for the element-wise ops the paper leaves out (BN, ReLU, pooling)
    # and for rounding in the table, while still catching a wrong stride or a doubled layer.
    flops = forward_flops(nn2)
    assert 2.6e9 <= flops <= 3.8e9
    assert forward_flops(nn2) == flops  # cached


def test_tiny_flops_much_smaller_than_nn4(tiny, nn4):
    assert forward_flops(tiny) * 5 < forward_flops(nn4)


def test_training_flops_is_three_forward():
    assert training_flops(1_000, 64) == 192_000


def test_build_model_native_size_and_embedding_dim():
    model = build_model("tiny", embedding_dim=64)
    assert model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 64)
    _assert_unit_rows(model(_pixels(3, 64)), 64)
    assert build_model("tiny", input_size=48).input_shape == (None, 48, 48, 3)


def test_nn4_small2_embedding_dim_configurable():
    model = build_model("nn4_small2", embedding_dim=32)
    _assert_unit_rows(model(_pixels(1, 96)), 32)


def test_unknown_model_names_allowed_ones():
    with pytest.raises(ValueError, match="nn2.*nn4_small2.*tiny"):
        build_model("resnet50")


def test_tiny_savedmodel_round_trip(tiny, tmp_path):
    x = _pixels(4, 64, seed=1)
    tiny.save(str(tmp_path / "tiny"))
    loaded = keras.models.load_model(str(tmp_path / "tiny"))
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), tiny(x, training=False).numpy())


def test_custom_layers_savedmodel_round_trip(tmp_path):
    # tiny uses only built-ins, so exercise the registered custom layers (LRN, L2 pooling) here.
    inputs, x = pixel_input(16)
    x = LocalResponseNormalization(name="norm")(x)
    x = inception(x, "mod", 4, 4, 8, 2, 4, "l2", 4)
    x = inception(x, "red", 0, 4, 8, 2, 4, "max", 0, stride=2)
    model = keras.Model(inputs, embedding_head(x, 8))
    assert model.output_shape == (None, 8)
    x = _pixels(2, 16, seed=2)
    model.save(str(tmp_path / "custom"))
    loaded = keras.models.load_model(str(tmp_path / "custom"))
    assert isinstance(loaded.get_layer("mod_pool"), L2Pooling2D)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_l2_pooling_value_and_finite_gradient_at_zero():
    x = tf.constant(np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1))
    y = L2Pooling2D(3, 1, padding="valid")(x)
    np.testing.assert_allclose(y.numpy().ravel(), [np.sqrt(np.mean(np.arange(9.0) ** 2))], rtol=1e-5)
    zeros = tf.zeros((1, 4, 4, 2))
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        out = tf.reduce_sum(L2Pooling2D()(zeros))
    assert np.all(np.isfinite(tape.gradient(out, zeros).numpy()))


def test_mixed_precision_output_stays_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("tiny")
        assert model.get_layer("block1_conv").compute_dtype == "float16"
        emb = model(_pixels(2, 64))
        assert emb.dtype == tf.float32
        _assert_unit_rows(emb, 128)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mirror_average_is_the_normalised_sum_and_blind_to_mirroring(tiny, tmp_path):
    from trainer.models.mirror import inference_model

    wrapped = inference_model(tiny, mirror_average=True)
    assert inference_model(tiny, mirror_average=False) is tiny
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    expected = tiny(x).numpy() + tiny(x[:, :, ::-1]).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    out = wrapped(x).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # A face and its mirror image get one embedding: the wrapper averages exactly that away.
    np.testing.assert_allclose(wrapped(x[:, :, ::-1]).numpy(), out, atol=1e-5)
    assert not np.allclose(tiny(x[:, :, ::-1]).numpy(), tiny(x).numpy(), atol=1e-3)
    # It shares the network's weights and saves as a plain SavedModel, as enrolment loads it.
    assert len(wrapped.get_weights()) == len(tiny.get_weights())
    wrapped.save(str(tmp_path / "m"), include_optimizer=False)
    loaded = keras.models.load_model(str(tmp_path / "m"), compile=False)
    np.testing.assert_allclose(loaded(x).numpy(), out, atol=1e-5)
