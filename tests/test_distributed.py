"""Ray Train with 2 CPU workers: the global-batch triplet step equals the single-process step.

One training step of the tiny model on a fixed P×K batch (P=4 identities × K=3 images) is run
(a) in this process on the whole batch and (b) on 2 Ray Train workers under
MultiWorkerMirroredStrategy, each holding 2 identities × 3 images. Because embeddings are
all-gathered before mining and batch-norm statistics are synchronised, both must see the same
12-image global batch: the loss, the active-triplet fraction and the weights after
one SGD update agree to float32 round-off.
"""
import sys

import numpy as np
import pytest

IMAGES = 12
SIZE = 32


def fixed_batch():
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 255, (IMAGES, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.repeat(np.arange(4, dtype=np.int32), 3)
    return images, labels


def one_step(strategy, images, labels, per_replica):
    """Build the tiny model under ``strategy``, take one SGD step; return loss, active, weights."""
    import tf_keras as keras

    from trainer.losses import TripletSemiHardLoss
    from trainer.models import build_model
    from trainer.train import make_train_step

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model("tiny", 16, SIZE)
        optimizer = keras.optimizers.SGD(0.5)
    step = make_train_step(strategy, model, optimizer, TripletSemiHardLoss(margin=0.5, distance_metric="L2"),
                           0.5, "L2")

    def shard(array):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: array[ctx.replica_id_in_sync_group * per_replica:(ctx.replica_id_in_sync_group + 1) * per_replica])

    loss, active, terms = step(shard(images), shard(labels))
    return float(loss), float(active), [w.copy() for w in model.get_weights()]


def worker(config):
    """Runs in each Ray Train worker."""
    import tensorflow as tf
    import ray.train

    images, labels = fixed_batch()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    loss, active, weights = one_step(strategy, images, labels, IMAGES // 2)
    if ray.train.get_context().get_world_rank() == 0:
        np.savez(config["out"], loss=loss, active=active, *weights)
    ray.train.report({"loss": loss})


def test_two_workers_match_one_process_on_the_same_global_batch(tmp_path, local_ray):
    import cloudpickle
    import tensorflow as tf
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    images, labels = fixed_batch()
    loss_1, active_1, weights_1 = one_step(tf.distribute.get_strategy(), images, labels, IMAGES)

    out = tmp_path / "two_workers.npz"
    result = TensorflowTrainer(
        worker, train_loop_config={"out": str(out)},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="two-worker-step", storage_path=str(tmp_path / "ray")),
    ).fit()
    assert result.error is None
    two = np.load(out)
    assert float(two["loss"]) == pytest.approx(loss_1, rel=1e-5, abs=1e-6)
    assert float(two["active"]) == pytest.approx(active_1, abs=1e-6)
    assert loss_1 > 0 and 0 < active_1 <= 1
    for i, expected in enumerate(weights_1):
        np.testing.assert_allclose(two[f"arr_{i}"], expected, rtol=1e-4, atol=1e-5)
