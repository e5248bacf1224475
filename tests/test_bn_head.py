"""nn4_small2_bn: nn4.small2 with insightface's output block (BN, dropout, FC, BN) as its head."""
import numpy as np
import tf_keras as keras

from trainer.flops import forward_flops
from trainer.models import NATIVE_INPUT_SIZE, build_model


def _pixels(batch, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3)).astype(np.float32)


def test_same_network_with_the_regularised_head():
    plain, bn = build_model("nn4_small2", input_size=96), build_model("nn4_small2_bn")
    assert NATIVE_INPUT_SIZE["nn4_small2_bn"] == 96 and bn.input_shape == (None, 96, 96, 3)
    names = [layer.name for layer in bn.layers]
    # The order is the block's: pool, BN, dropout, FC (no bias), BN without scale, L2 normalisation.
    assert names[-6:] == ["avg_pool", "feature_bn", "feature_dropout", "fc", "embedding_bn", "l2_norm"]
    assert bn.get_layer("fc").use_bias is False and bn.get_layer("embedding_bn").scale is False
    assert bn.get_layer("feature_dropout").rate == 0.4
    # The trunk is unchanged; the head adds two batch norms (736 features: 4 vectors; 128 without scale: 3) and
    # drops the FC bias.
    assert bn.count_params() - plain.count_params() == 4 * 736 + 3 * 128 - 128
    assert abs(forward_flops(bn, 96) - forward_flops(plain, 96)) / forward_flops(plain, 96) < 1e-3


def test_unit_embeddings_with_dropout_only_in_training():
    model = build_model("nn4_small2_bn", input_size=64)
    x = _pixels(4, 64)
    inference = model(x, training=False).numpy()
    np.testing.assert_allclose(np.linalg.norm(inference, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(model(x, training=False).numpy(), inference)
    first, second = model(x, training=True).numpy(), model(x, training=True).numpy()
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(first, second, atol=1e-4)  # dropout draws a new mask every call


def test_savedmodel_round_trip_after_training_statistics_move(tmp_path):
    model = build_model("nn4_small2_bn", embedding_dim=32, input_size=64)
    for seed in range(3):  # training calls move both batch norms' moving statistics away from their start
        model(_pixels(8, 64, seed), training=True)
    assert not np.allclose(model.get_layer("embedding_bn").moving_mean.numpy(), 0.0)
    x = _pixels(2, 64, seed=9)
    model.save(str(tmp_path / "m"), include_optimizer=False)
    loaded = keras.models.load_model(str(tmp_path / "m"), compile=False)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)
