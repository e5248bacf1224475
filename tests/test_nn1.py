"""NN1 (trainer/models/nn1.py, FaceNet paper Table 1): its size and FLOPs against the paper's, and
one optimizer step of the trainer's own train step on it. The model (140M parameters, 560 MB of
float32 weights) is built once for the module; its FLOP count freezes all of them into a graph
(about a minute on the shared 2-core machine), so that test is marked slow."""
import numpy as np
import pytest
import tf_keras as keras

from trainer.models import NATIVE_INPUT_SIZE, build_model
from trainer.models.nn1 import Maxout


@pytest.fixture(scope="module")
def nn1():
    keras.utils.set_random_seed(0)
    return build_model("nn1")


def test_nn1_shape_and_parameter_count_match_the_paper(nn1):
    assert NATIVE_INPUT_SIZE["nn1"] == 220
    assert nn1.input_shape == (None, 220, 220, 3) and nn1.output_shape == (None, 128)
    # Schroff et al. 2015, Table 1: 140M in total, 103M of them in fc1 (7x7x256 -> maxout 2 x 4096).
    assert abs(nn1.count_params() - 140e6) / 140e6 < 0.10
    assert abs(nn1.get_layer("fc1").count_params() - 103e6) / 103e6 < 0.02


@pytest.mark.slow
def test_nn1_flops_match_the_paper(nn1):
    from trainer.flops import forward_flops

    # Table 1: 1.6B multiply-adds at 220x220; the profiler counts 2 FLOPs per multiply-add.
    assert abs(forward_flops(nn1) / 2 - 1.6e9) / 1.6e9 < 0.10


def test_one_training_step_on_nn1(nn1):
    """The trainer's step (trainer/train_step.py) with the default optimizer and semi-hard triplet
    loss, on 2 identities x 2 photos: the loss is finite, fc1 moves, outputs stay unit-norm."""
    import tensorflow as tf

    from trainer.config import TrainConfig
    from trainer.losses import TripletSemiHardLoss
    from trainer.optimizers import make_optimizer
    from trainer.train_step import make_train_step

    t = TrainConfig(identities_per_batch=2, images_per_identity=2)
    strategy = tf.distribute.get_strategy()
    optimizer = make_optimizer(t, steps_per_epoch=1)
    step = make_train_step(strategy, nn1, optimizer, TripletSemiHardLoss(margin=t.margin), t.margin, t.distance_metric)
    images = np.random.default_rng(0).uniform(0, 255, (4, 220, 220, 3)).astype(np.float32)
    labels = tf.constant([0, 0, 1, 1], tf.int32)
    before = nn1.get_layer("fc1").kernel.numpy()[:64, :64].copy()
    loss, active, terms = step(tf.constant(images), labels)
    assert np.isfinite(float(loss)) and 0.0 <= float(active) <= 1.0
    assert set(terms) == {"loss/triplet"} and float(terms["loss/triplet"]) == pytest.approx(float(loss))
    assert not np.array_equal(nn1.get_layer("fc1").kernel.numpy()[:64, :64], before)
    np.testing.assert_allclose(np.linalg.norm(nn1(images[:2], training=False).numpy(), axis=1), 1.0, atol=1e-5)


def test_maxout_takes_the_max_of_each_pair_and_saves(tmp_path):
    x = np.array([[1.0, 3.0, -2.0, -5.0, 0.5, 0.25]], np.float32)
    np.testing.assert_array_equal(Maxout(2)(x).numpy(), [[3.0, -2.0, 0.5]])
    inputs = keras.Input((6,))
    model = keras.Model(inputs, Maxout(2, name="maxout")(keras.layers.Dense(6)(inputs)))
    model.save(str(tmp_path / "m"))
    loaded = keras.models.load_model(str(tmp_path / "m"))
    assert isinstance(loaded.get_layer("maxout"), Maxout) and loaded.output_shape == (None, 3)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_a_config_can_name_nn1():
    from trainer import config as config_lib
    assert config_lib.load(None, ["model.name=nn1"]).model.name == "nn1"
