"""Which weights a run keeps: the best validated checkpoint, the starting weights among them."""
import json
from pathlib import Path

import numpy as np
import tf_keras as keras

from tests.test_train import run, smoke_config
from trainer import checkpoints


def _state(run_dir: Path, name: str, epoch: int, val_accuracy: float) -> None:
    directory = run_dir / "checkpoints" / name
    directory.mkdir(parents=True)
    (directory / "state.json").write_text(json.dumps({"epoch": epoch, "metrics": {"val_accuracy": val_accuracy}}))


def test_the_starting_weights_compete_with_the_epochs(tmp_path):
    _state(tmp_path, "start", -1, 0.90)
    _state(tmp_path, "epoch-0000", 0, 0.85)
    _state(tmp_path, "epoch-0001", 1, 0.90)  # a tie: the earlier, the starting weights, stay
    assert checkpoints.kept_checkpoint(tmp_path).name == "start"
    assert checkpoints.latest_checkpoint(tmp_path).name == "epoch-0001"  # resume goes on after epochs only
    assert checkpoints.kept_checkpoint(tmp_path, "last").name == "epoch-0001"
    _state(tmp_path, "epoch-0002", 2, 0.91)
    assert checkpoints.kept_checkpoint(tmp_path).name == "epoch-0002"


def test_a_run_of_no_epochs_keeps_its_starting_weights(tmp_path):
    _state(tmp_path, "start", -1, float("nan"))
    assert checkpoints.kept_checkpoint(tmp_path).name == "start"


def test_fine_tuning_that_only_hurts_ships_the_starting_weights(synthetic_root, tmp_path, local_ray):
    base_plan, _ = run(smoke_config(synthetic_root, tmp_path, run_name="base"))
    source = checkpoints.kept_checkpoint(base_plan.run_dir)
    # A learning rate that wrecks the model in its one epoch: validation falls, the start is kept.
    plan, results = run(smoke_config(synthetic_root, tmp_path, epochs=1, learning_rate=50.0, validate_start=True,
                                     run_name="wrecked"), init_from=str(source))
    run_dir = Path(plan.run_dir)
    start = json.loads((run_dir / "checkpoints" / "start" / "state.json").read_text())
    epoch = json.loads((run_dir / "checkpoints" / "epoch-0000" / "state.json").read_text())
    assert start["metrics"]["val_accuracy"] > epoch["metrics"]["val_accuracy"], (start["metrics"], epoch["metrics"])
    assert results["last_epoch"]["kept_epoch"] == -1
    assert checkpoints.kept_checkpoint(run_dir).name == "start"
    base_model, _, _ = checkpoints.load_run(base_plan.run_dir)
    shipped = keras.models.load_model(run_dir / "model", compile=False)
    for a, b in zip(base_model.get_weights(), shipped.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_without_validate_start_nothing_changes(synthetic_root, tmp_path, local_ray):
    plan, results = run(smoke_config(synthetic_root, tmp_path, epochs=1, run_name="plain"))
    assert not (Path(plan.run_dir) / "checkpoints" / "start").exists()
    assert results["last_epoch"].get("kept_epoch", 0) == 0
