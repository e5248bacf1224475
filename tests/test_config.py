"""Config loading: unknown keys and bad values fail at once, naming the key."""
from pathlib import Path

import pytest

from trainer import config as config_lib
from trainer.config import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_config_loads(path):
    cfg = config_lib.load(path)
    assert cfg.data.source


def test_unknown_key_is_rejected_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lerning_rate'"):
        config_lib.load(write(tmp_path, "train:\n  lerning_rate: 0.1\n"))


def test_unknown_section_is_rejected_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config section 'trian'"):
        config_lib.load(write(tmp_path, "trian:\n  epochs: 1\n"))


@pytest.mark.parametrize("text, message", [
    ("train:\n  epochs: ten\n", "'train.epochs' must be int"),
    ("train:\n  augment: 1\n", "'train.augment' must be bool"),
    ("model:\n  name: resnet\n", "'model.name' must be one of"),
    ("train:\n  images_per_identity: 1\n", "'train.images_per_identity' must be >= 2"),
    ("train:\n  learning_rate: -1\n", "'train.learning_rate' must be > 0"),
    ("data:\n  val_fraction: 0.6\n  test_fraction: 0.5\n", "data.val_fraction"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("train: [1, 2\n", "not valid YAML"),
])
def test_bad_values_fail_with_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as err:
        config_lib.load(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        config_lib.load("does/not/exist.yaml")


def test_overrides_are_typed_and_validated(tmp_path):
    cfg = config_lib.load(write(tmp_path, "train:\n  epochs: 3\n"), ["train.epochs=5", "model.name=tiny",
                                                                      "train.learning_rate=0.5"])
    assert (cfg.train.epochs, cfg.model.name, cfg.train.learning_rate) == (5, "tiny", 0.5)
    with pytest.raises(ConfigError, match="unknown config key 'train.nope'"):
        config_lib.load(None, ["train.nope=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        config_lib.load(None, ["epochs"])


def test_resolved_config_round_trips(tmp_path):
    cfg = config_lib.load(None, ["train.epochs=7", "data.source=/data/x"])
    cfg.save(tmp_path / "resolved.yaml")
    again = config_lib.load(tmp_path / "resolved.yaml")
    assert again == cfg
    assert again.flat()["train.epochs"] == 7


def test_warm_start_config_changes_only_budget_rate_and_stopping_rule():
    from trainer.config import from_dict
    from trainer.warm_start import stop_at, warm_start_config

    base = from_dict({"train": {"epochs": 20, "steps_per_epoch": 0, "learning_rate": 0.001, "warmup_epochs": 1,
                                "teacher": "dlib_resnet_v1", "distill_weight": 1.0, "validate_start": True}})
    warm = warm_start_config(base, epochs=3, steps_per_epoch=20, learning_rate_scale=0.1, warmup_epochs=0,
                             stop_when=stop_at({"val_accuracy": 0.8, "new_accuracy": 0.7}, tolerance=0.005),
                             run_name="retrain-job1")
    assert (warm.train.epochs, warm.train.steps_per_epoch, warm.train.warmup_epochs) == (3, 20, 0)
    assert warm.train.learning_rate == pytest.approx(1e-4)
    assert warm.train.stop_when == "val_accuracy>=0.7950,new_accuracy>=0.6950"
    assert warm.train.run_name == "retrain-job1" and warm.train.teacher == "dlib_resnet_v1"
    assert not warm.train.validate_start, "a warm start that kept production's weights would be production"
    assert base.train.epochs == 20 and base.train.learning_rate == 0.001, "the base config is left alone"
    same = warm_start_config(base)
    assert same.to_dict() == {**base.to_dict(), "train": {**base.to_dict()["train"], "stop_when": "", "validate_start": False}}


def test_atomic_write_replaces_whole_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import os

    from trainer.files import atomic_write

    target = atomic_write(tmp_path / "sub" / "plan.json", "old")
    assert target.read_text() == "old" and atomic_write(target, b"new", sync=True).read_bytes() == b"new"

    def torn(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", torn)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "never seen")
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["plan.json"]


def test_sgd_steps_in_proportion_to_the_gradient_where_adam_does_not():
    """train.optimizer: sgd, for fine-tuning pretrained weights: a tiny gradient moves a weight a
    tiny amount, where Adam moves every weight alike, by a good part of the learning rate."""
    import tensorflow as tf

    from trainer.config import from_dict
    from trainer.optimizers import make_optimizer

    moved = {}
    for name in ("sgd", "adam"):
        weights = tf.Variable([1e-9, 1e-3])
        make_optimizer(from_dict({"train": {"optimizer": name, "learning_rate": 1e-3}}).train, 1).apply_gradients(
            [(tf.constant([1e-6, 1e-6]), weights)])
        moved[name] = (weights.numpy().astype(float) - [1e-9, 1e-3]).tolist()
    assert moved["sgd"] == pytest.approx([-1e-9, -1e-9], abs=2e-10)
    assert moved["adam"][0] == pytest.approx(moved["adam"][1]) and moved["adam"][0] < -1e-4  # 10^5 × the weight
