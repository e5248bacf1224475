"""Run directories and checkpoints.

A run directory holds everything needed to resume, evaluate or serve it::

    runs/<run>/config.yaml          the resolved config (every default filled in)
    runs/<run>/plan.json            data manifest, identity split, shard lists, labels (trainer/run_plan.py)
    runs/<run>/checkpoints/epoch-0003/
        weights.*                   tf.train.Checkpoint of model + optimizer
        state.json                  epoch, compute counters so far, validation metrics
        config.yaml                 the resolved config again, so a checkpoint stands alone
    runs/<run>/model/               final Keras SavedModel (L2-normalised embeddings)
    runs/<run>/results.json         final metrics and compute counters (trainer/run_results.py)

Under MultiWorkerMirroredStrategy every worker must take part in a save (the variables are
collective); only the chief writes to the run directory, the others to a scratch directory.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import yaml

from trainer import config as config_lib
from trainer.run_plan import RunPlan


def checkpoint_dir(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch-{epoch:04d}"


def start_checkpoint_dir(run_dir: str | Path) -> Path:
    """The starting weights, validated (``train.validate_start``, or a run of 0 epochs)."""
    return Path(run_dir) / "checkpoints" / "start"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    done = sorted(p.parent for p in (Path(run_dir) / "checkpoints").glob("epoch-*/state.json"))
    return done[-1] if done else None


def best_checkpoint(run_dir: str | Path, metric: str) -> Path | None:
    """The checkpoint whose state has the highest ``metric`` (the earliest of equals, the starting
    weights first); None when no checkpoint recorded it, e.g. a run without a validation split."""
    best, best_value = None, float("-inf")
    start = start_checkpoint_dir(run_dir) / "state.json"
    for state_file in [start] * start.exists() + sorted((Path(run_dir) / "checkpoints").glob("epoch-*/state.json")):
        value = json.loads(state_file.read_text()).get("metrics", {}).get(metric)
        if value is not None and value > best_value:
            best, best_value = state_file.parent, value
    return best


def _trackables(model, optimizer, head) -> dict:
    """What a checkpoint holds: the network, the optimizer's slots when given (the head's among them), and
    a run's margin-softmax head (its class weights) when it has one, so that a resumed run goes on with the head
    it had rather than a random one, whose first gradients would pull the trained embedding apart."""
    objects = {"model": model}
    if optimizer is not None:
        objects["optimizer"] = optimizer
    if head is not None:
        objects["head"] = head
    return objects


def save(directory: Path, model, optimizer, state: dict, cfg_dict: dict, is_chief: bool = True,
         head=None) -> Path:
    """Write weights (+ the margin head) + state + config; atomic for the chief (written aside, then renamed)."""
    import tensorflow as tf

    target = directory if is_chief else Path(tempfile.mkdtemp(prefix="ckpt-worker-"))
    scratch = target.with_name(target.name + ".partial") if is_chief else target
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
    tf.train.Checkpoint(**_trackables(model, optimizer, head)).write(str(scratch / "weights"))
    if not is_chief:
        shutil.rmtree(scratch, ignore_errors=True)
        return directory
    (scratch / "state.json").write_text(json.dumps(state, indent=1))
    (scratch / "config.yaml").write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target


def restore(directory: str | Path, model, optimizer=None, head=None) -> dict:
    """Load weights (and optimizer slots, the margin head, when given) from a checkpoint dir; return its
    state. A checkpoint written before heads were saved leaves the given head as it was."""
    import tensorflow as tf

    directory = Path(directory)
    if not (directory / "weights.index").exists():
        raise FileNotFoundError(f"no checkpoint at {directory} (expected weights.index)")
    status = tf.train.Checkpoint(**_trackables(model, optimizer, head)).read(str(directory / "weights"))
    status.expect_partial()  # warm starts read model weights only; optimizer slots are then unused
    state_file = directory / "state.json"
    return json.loads(state_file.read_text()) if state_file.exists() else {}


def kept_checkpoint(run_dir: str | Path, keep: str = "best") -> Path | None:
    """The checkpoint a run keeps as its model: the best validation accuracy (``keep`` "best",
    falling back to the latest when no epoch was validated) or the latest; a run of 0 epochs keeps
    its starting weights."""
    start = start_checkpoint_dir(run_dir)
    return ((best_checkpoint(run_dir, "val_accuracy") if keep == "best" else None) or latest_checkpoint(run_dir)
            or (start if (start / "state.json").exists() else None))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir, or a run dir (the checkpoint it keeps, see ``kept_checkpoint``)."""
    path = Path(path)
    if (path / "weights.index").exists():
        return path
    keep = "best"
    if (path / "config.yaml").exists():
        keep = (yaml.safe_load((path / "config.yaml").read_text()) or {}).get("train", {}).get("keep", "best")
    latest = kept_checkpoint(path, keep)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint found in {path}")
    return latest


def load_run(run_dir: str | Path):
    """(the run's inference model with its kept weights, its Config, its ``RunPlan``) for evaluation
    or export; the inference model is mirror-averaged when the run's ``model.mirror_average`` says so."""
    from trainer.models import build_model
    from trainer.models.mirror import inference_model

    plan = RunPlan.load(run_dir)
    cfg = config_lib.from_dict(plan.config)
    model = build_model(cfg.model.name, cfg.model.embedding_dim, plan.image_size)
    restore(resolve_checkpoint(run_dir), model)
    return inference_model(model, cfg.model.mirror_average), cfg, plan
