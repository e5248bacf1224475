"""Training end to end on synthetic identities: it learns, checkpoints, resumes and warm-starts."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import checkpoints, config as config_lib, train


def smoke_config(root, tmp_path, **train_overrides):
    overrides = {"epochs": 3, "steps_per_epoch": 12, "identities_per_batch": 4, "images_per_identity": 3,
                 "learning_rate": 0.003, "optimizer": "adam", "out_dir": str(tmp_path / "runs"), **train_overrides}
    return config_lib.from_dict({
        "data": {"source": str(root), "align": False, "cache_dir": str(tmp_path / "cache"),
                 "val_fraction": 0.25, "test_fraction": 0.25},
        "model": {"name": "tiny", "input_size": 32},
        "train": overrides,
        "eval": {"folds": 2, "pairs_per_fold": 10},
        "ray": {"num_workers": 0},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    })


def run(cfg, **plan_extra):
    plan = train.plan_run(cfg, None, progress=False)
    for key, value in plan_extra.items():
        setattr(plan, key, value)
    return plan, train.run_tracked(plan, cfg)


def test_training_learns_and_writes_a_complete_run(synthetic_root, tmp_path, local_ray):
    untrained_plan, untrained = run(smoke_config(synthetic_root, tmp_path, epochs=0, run_name="untrained"))
    plan, results = run(smoke_config(synthetic_root, tmp_path, run_name="trained"))
    run_dir = Path(plan.run_dir)
    assert results["compute"]["steps"] == 36 and results["compute"]["images"] == 36 * 12
    assert results["test"]["auc"] > untrained["test"]["auc"] + 0.05, (results["test"], untrained["test"])
    assert results["test"]["auc"] > 0.75
    for name in ("config.yaml", "plan.json", "results.json", "model/saved_model.pb", "eval-test/roc.png",
                 "eval-test/distances.png", "eval-test/pairs.txt"):
        assert (run_dir / name).exists(), name
    latest = checkpoints.latest_checkpoint(run_dir)
    assert latest.name == "epoch-0002"
    assert config_lib.load(latest / "config.yaml") == config_lib.from_dict(plan.config)
    assert json.loads((latest / "state.json").read_text())["compute"]["steps"] == 36


def test_resume_continues_from_the_last_checkpoint(synthetic_root, tmp_path, local_ray):
    plan, first = run(smoke_config(synthetic_root, tmp_path, epochs=2, run_name="resumable"))
    resumed_plan, cfg = train.resume_plan(plan.run_dir, ["train.epochs=3"])
    assert checkpoints.latest_checkpoint(resumed_plan.run_dir).name == "epoch-0001"  # where it goes on
    results = train.launch(resumed_plan, cfg)
    assert results["last_epoch"]["epoch"] == 2
    assert results["compute"]["steps"] == first["compute"]["steps"] + 12  # one more epoch, not three


def test_init_from_starts_from_given_weights(synthetic_root, tmp_path, local_ray):
    import numpy as np

    plan, _ = run(smoke_config(synthetic_root, tmp_path, epochs=1, run_name="base"))
    source = checkpoints.latest_checkpoint(plan.run_dir)
    warm_plan, _ = run(smoke_config(synthetic_root, tmp_path, epochs=0, run_name="warm"), init_from=str(source))
    base_model, _, _ = checkpoints.load_run(plan.run_dir)
    import tf_keras as keras

    warm_model = keras.models.load_model(Path(warm_plan.run_dir) / "model", compile=False)
    for a, b in zip(base_model.get_weights(), warm_model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("args, message", [
    (["--config", "experiments/smoke.yaml", "--set", "train.lerning_rate=1"], "unknown config key 'train.lerning_rate'"),
    (["--config", "experiments/smoke.yaml", "--set", "data.source=/no/such/dir"], "dataset path not found"),
    (["--resume", "/no/such/run"], "not a run directory"),
    (["--config", "missing.yaml"], "config file not found"),
])
def test_cli_errors_are_one_line_with_exit_2(args, message):
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "trainer.train", *args], cwd=root, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last


def test_one_photo_identities_from_an_extra_source_join_training(synthetic_root, tmp_path, local_ray):
    """Enrolled people arrive as aligned crops, often one per person: K augmented views of it."""
    from tests.synthetic import make_identity_folders

    extra = make_identity_folders(tmp_path / "enrolled", identities=3, images=1, size=32, seed=5)
    cfg = smoke_config(synthetic_root, tmp_path, epochs=1, steps_per_epoch=3, run_name="extra")
    cfg.data.extra_source = str(extra)
    plan, results = run(cfg)
    base = smoke_config(synthetic_root, tmp_path, epochs=0, run_name="base-only")
    assert len(plan.shards.train) == len(train.plan_run(base, None, progress=False).shards.train) + 3
    assert results["compute"]["steps"] == 3


def test_stop_when_ends_training_once_every_condition_holds(synthetic_root, tmp_path, local_ray):
    plan, results = run(smoke_config(synthetic_root, tmp_path, epochs=5, steps_per_epoch=2, run_name="stops",
                                     stop_when="loss>=0,val_accuracy>=0"))
    assert results["last_epoch"]["epoch"] == 0 and results["compute"]["steps"] == 2
    with pytest.raises(config_lib.ConfigError, match="stop_when"):
        config_lib.load(None, ["train.stop_when=val_accuracy>0.5"])


def test_an_existing_run_directory_is_never_reused(synthetic_root, tmp_path, local_ray):
    cfg = smoke_config(synthetic_root, tmp_path, epochs=0, run_name="taken")
    train.plan_run(cfg, None, progress=False)
    with pytest.raises(config_lib.ConfigError, match="already exists.*--resume"):
        train.plan_run(smoke_config(synthetic_root, tmp_path, epochs=0, run_name="taken"), None, progress=False)


def test_a_new_run_directory_is_relative_to_facenet_workdir(tmp_path, monkeypatch):
    """``ray job submit --working-dir`` runs the driver in a copy: runs still land where the user is."""
    from trainer.plan import new_run_dir

    monkeypatch.setenv("FACENET_WORKDIR", str(tmp_path))
    cfg = config_lib.load(None, ["train.out_dir=runs", "train.run_name=here"])
    assert new_run_dir(cfg, None) == (tmp_path / "runs" / "here").resolve()
    (tmp_path / "runs" / "here").mkdir(parents=True)
    (tmp_path / "runs" / "here" / "plan.json").write_text("{}")
    with pytest.raises(config_lib.ConfigError, match="already exists"):
        new_run_dir(cfg, None)
