"""experiments/checkpoint_average.py: the mean of a run's checkpoints, batch norm recomputed, scored on
validation; on a copy of the session's tiny trained run with a second, shifted checkpoint beside its first."""
import json
import shutil

import numpy as np
import pytest

from experiments import checkpoint_average
from trainer import checkpoints, config as config_lib
from trainer.models import build_model
from trainer.run_plan import RunPlan


@pytest.fixture()
def two_epochs(trained_run, tmp_path):
    """A copy of the trained run whose epoch 1 is its epoch 0 with every weight + 1."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    plan = RunPlan.load(run)
    cfg = config_lib.from_dict(plan.config)
    model = build_model(cfg.model.name, cfg.model.embedding_dim, plan.image_size)
    state = checkpoints.restore(checkpoints.checkpoint_dir(run, 0), model)
    first = model.get_weights()
    model.set_weights([w + 1.0 for w in first])
    checkpoints.save(checkpoints.checkpoint_dir(run, 1), model, None, {**state, "epoch": 1}, cfg.to_dict())
    return run, model, first


def test_the_average_is_the_mean_of_the_checkpoints(two_epochs):
    run, model, first = two_epochs
    checkpoint_average.average_weights(str(run), model, 0, 1)
    for got, start in zip(model.get_weights(), first):
        np.testing.assert_allclose(got, start + 0.5, rtol=1e-6, atol=1e-6)
    checkpoint_average.average_weights(str(run), model, 1, 1)  # one checkpoint: itself
    np.testing.assert_allclose(model.get_weights()[0], first[0] + 1.0, rtol=1e-6)


def test_batch_norm_statistics_are_recomputed_from_training_photos(two_epochs):
    run, model, _ = two_epochs
    plan = RunPlan.load(run)
    norm = next(layer for layer in model.layers if type(layer).__name__ == "BatchNormalization")
    before = norm.moving_mean.numpy().copy()
    # The tiny run's training photos fill one batch of 64: its statistics become exactly that batch's.
    assert checkpoint_average.recompute_batch_norm(model, plan.shards.train, plan.image_size, batches=3) == 1
    assert norm.momentum == 0.0
    after = norm.moving_mean.numpy()
    assert np.all(np.isfinite(after)) and not np.allclose(after, before)
    assert np.all(norm.moving_variance.numpy() > 0)


def test_the_experiment_writes_a_row_per_variant_and_refuses_a_missing_epoch(two_epochs, tmp_path, capsys):
    run, _, _ = two_epochs
    out = tmp_path / "avg.json"
    assert checkpoint_average.main([str(run), "--epochs", "0-1", "--bn-batches", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["weights"] for row in result["rows"]] == [
        "kept: epoch-0000", "mean of epochs 0-1", "mean of epochs 0-1, batch norm recomputed"]
    assert all(0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["auc"] <= 1.0 for row in result["rows"])
    assert result["command"].startswith("python -m experiments.checkpoint_average ")
    assert out.with_suffix(".md").read_text().count("| mean of epochs 0-1") == 2
    missing = tmp_path / "missing.json"
    assert checkpoint_average.main([str(run), "--epochs", "0-3", "--out", str(missing)]) == 2
    assert "error: FileNotFoundError:" in capsys.readouterr().err and not missing.exists()
    with pytest.raises(SystemExit) as exit_info:
        checkpoint_average.main([str(run), "--epochs", "3-1"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        checkpoint_average.main([str(run), "--epochs", "0-1", "--bn-batches", "-1"])
    assert exit_info.value.code == 2
