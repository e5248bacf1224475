"""trainer.losses against tensorflow-addons 0.23 golden values, plus Keras (de)serialisation."""
import json
from pathlib import Path

import numpy as np
import pytest

import trainer  # noqa: F401  (forces tf-keras before TensorFlow is imported)
import tensorflow as tf
import tf_keras as keras

from trainer.losses import (
    TripletHardLoss,
    TripletSemiHardLoss,
    active_triplet_fraction,
    pairwise_distance,
    triplet_hard_loss,
    triplet_semihard_loss,
)

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "tfa_triplet_golden.json").read_text())
CASES = {case["name"]: case for case in GOLDEN["cases"]}
LOSS_CLASSES = {"semihard": TripletSemiHardLoss, "hard": TripletHardLoss}


def _close_to_tfa(actual, expected):
    # Absolute 1e-5, relative 1e-6 for the large squared-L2 cases (float32 has ~7 digits).
    return float(actual) == pytest.approx(expected, abs=1e-5, rel=1e-6)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_tfa_golden(name, graph):
    case = CASES[name]
    loss = LOSS_CLASSES[case["loss"]](**case["kwargs"])
    compute = tf.function(lambda y, e: loss(y, e)) if graph else loss
    labels = tf.constant(case["labels"])
    embeddings = tf.constant(case["embeddings"], tf.float32)
    assert _close_to_tfa(compute(labels, embeddings), case["expected"])


def test_labels_may_be_a_column():
    case = CASES["semihard-unbalanced-m0.2-L2"]
    column = np.asarray(case["labels"]).reshape(-1, 1)
    value = TripletSemiHardLoss(**case["kwargs"])(column, np.asarray(case["embeddings"], np.float32))
    assert _close_to_tfa(value, case["expected"])


def _brute_force_semihard(labels, distances, margin):
    """tfa's rules written as loops: closest negative farther than d(a,p), else farthest negative."""
    terms = []
    for a in range(len(labels)):
        negatives = distances[a][labels != labels[a]]
        for p in np.flatnonzero(labels == labels[a]):
            if p == a:
                continue
            farther = negatives[negatives > distances[a, p]]
            chosen = farther.min() if farther.size else negatives.max() if negatives.size else distances[a].min()
            terms.append(margin + distances[a, p] - chosen)
    terms = np.asarray(terms)
    return np.maximum(terms, 0).mean(), (terms > 0).mean()


@pytest.mark.parametrize("seed", range(5))
def test_semihard_mining_agrees_with_brute_force_even_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=20)  # leaves some singleton classes and anchors without farther negatives
    # Small integer coordinates make many distances exactly equal, exercising the strict ">".
    embeddings = rng.integers(0, 3, size=(20, 3)).astype(np.float32)
    distances = pairwise_distance(embeddings).numpy()
    expected_loss, expected_fraction = _brute_force_semihard(labels, distances, margin=0.5)
    assert float(triplet_semihard_loss(labels, embeddings, margin=0.5)) == pytest.approx(expected_loss, abs=1e-6)
    assert float(active_triplet_fraction(labels, embeddings, 0.5, "L2")) == pytest.approx(expected_fraction)


@pytest.mark.parametrize("margin, expected_fraction, expected_loss", [(1.0, 0.75, 0.75), (0.4, 0.25, 0.35)])
def test_active_triplet_fraction_hand_derived(margin, expected_fraction, expected_loss):
    """Points on a line, x = [0, 1, 1.5, 4], labels [0, 0, 1, 1], L2 distance |x_i - x_j|.

    (a, p)  d(a,p)  a's negatives  mined n*           margin + d(a,p) - d(a,n*)
    (0, 1)  1.0     {1.5, 4.0}     1.5 (closest > 1)  m - 0.5
    (1, 0)  1.0     {0.5, 3.0}     3.0 (closest > 1)  m - 2.0
    (2, 3)  2.5     {1.5, 0.5}     none > 2.5: 1.5    m + 1.0  (fallback: farthest negative)
    (3, 2)  2.5     {4.0, 3.0}     3.0                m - 0.5
    m = 1.0: terms 0.5, -1, 2, 0.5   -> 3 of 4 active (0.75); loss (0.5 + 2 + 0.5) / 4 = 0.75
    m = 0.4: terms -0.1, -1.6, 1.4, -0.1 -> 1 of 4 active (0.25); loss 1.4 / 4 = 0.35
    """
    labels = tf.constant([0, 0, 1, 1])
    embeddings = tf.constant([[0.0], [1.0], [1.5], [4.0]])
    assert float(active_triplet_fraction(labels, embeddings, margin, "L2")) == pytest.approx(expected_fraction)
    assert float(triplet_semihard_loss(labels, embeddings, margin)) == pytest.approx(expected_loss, abs=1e-6)
    in_graph = tf.function(active_triplet_fraction)(labels, embeddings, margin, "L2")
    assert float(in_graph) == pytest.approx(expected_fraction)


def test_active_triplet_fraction_without_positive_pairs_is_zero():
    assert float(active_triplet_fraction([0, 1, 2], tf.eye(3), 1.0, "L2")) == 0.0


@pytest.mark.parametrize("half", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("loss_fn", [triplet_semihard_loss, triplet_hard_loss])
def test_half_precision_input_is_computed_in_float32_and_cast_back(loss_fn, half):
    case = CASES["semihard-pk6x4-m0.2-L2"]
    embeddings = tf.constant(case["embeddings"], tf.float32)
    reference = loss_fn(case["labels"], tf.cast(tf.cast(embeddings, half), tf.float32), margin=0.2)
    value = loss_fn(case["labels"], tf.cast(embeddings, half), margin=0.2)
    assert value.dtype == half
    assert float(value) == pytest.approx(float(reference), rel=1e-2)


def test_gradients_are_finite_with_duplicate_embeddings():
    embeddings = tf.Variable([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
    labels = tf.constant([0, 0, 1, 1, 2])
    for loss_fn in (triplet_semihard_loss, triplet_hard_loss):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, embeddings)
        gradient = tape.gradient(loss, embeddings)
        assert np.all(np.isfinite(gradient.numpy())) and np.any(gradient.numpy() != 0)


def test_custom_distance_callable_and_unknown_metric():
    case = CASES["semihard-raw-m0.2-squared-L2"]
    squared = lambda e: pairwise_distance(e, squared=True)  # noqa: E731
    value = TripletSemiHardLoss(margin=0.2, distance_metric=squared)(case["labels"], case["embeddings"])
    assert _close_to_tfa(value, case["expected"])
    with pytest.raises(ValueError, match="distance_metric"):
        TripletHardLoss(distance_metric="cosine")


@keras.utils.register_keras_serializable(package="facenet_test")
def _registered_squared_l2(embeddings):
    return pairwise_distance(embeddings, squared=True)


def test_registered_distance_callable_survives_config():
    case = CASES["hard-raw-m0.2-squared-L2"]
    loss = TripletHardLoss(margin=0.2, distance_metric=_registered_squared_l2)
    config = loss.get_config()
    assert config["distance_metric"] == "facenet_test>_registered_squared_l2"
    assert _close_to_tfa(TripletHardLoss.from_config(config)(case["labels"], case["embeddings"]), case["expected"])


@pytest.mark.parametrize(
    "loss", [TripletSemiHardLoss(margin=0.3, distance_metric="angular"), TripletHardLoss(0.5, soft=True, name="bh")]
)
def test_config_round_trip(loss):
    config = loss.get_config()
    assert config["reduction"] == keras.losses.Reduction.NONE
    rebuilt = type(loss).from_config(config)
    assert rebuilt.get_config() == config
    via_registry = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(via_registry) is type(loss) and via_registry.get_config() == config
    case = CASES["semihard-pk6x4-m0.2-L2"]
    assert float(rebuilt(case["labels"], case["embeddings"])) == float(loss(case["labels"], case["embeddings"]))


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("file_name", ["saved_model_dir", "model.keras", "model.h5"])
@pytest.mark.parametrize("loss_class", [TripletSemiHardLoss, TripletHardLoss])
def test_compiled_model_survives_save_and_load(tmp_path, loss_class, file_name):
    case = CASES["semihard-unbalanced-m0.2-L2"]
    features = np.asarray(case["embeddings"], np.float32)
    labels = np.asarray(case["labels"], np.int32)
    inputs = keras.Input(shape=(features.shape[1],))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    model.compile(optimizer="sgd", loss=loss_class(margin=0.3, distance_metric="squared-L2"))
    expected = float(loss_class(margin=0.3, distance_metric="squared-L2")(labels, model(features)))

    model.save(tmp_path / file_name)
    restored = keras.models.load_model(tmp_path / file_name)

    assert isinstance(restored.loss, loss_class)
    assert restored.loss.get_config() == model.loss.get_config()
    evaluated = restored.evaluate(features, labels, batch_size=len(labels), verbose=0)
    assert evaluated == pytest.approx(expected, abs=1e-5)
