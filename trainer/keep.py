"""Which weights a finished run keeps as its model (``train.keep``).

``keep: best`` keeps the checkpoint of highest validation accuracy, not the last (a run overfits
before it ends). A run that starts from weights worth keeping (a pretrained ``dlib_resnet``,
``--init-from``) checkpoints them too with ``train.validate_start``, under ``checkpoints/start``,
so that fine-tuning never ships a model worse on validation than where it began; a run of 0
epochs checkpoints them as its model. Everything that loads a run (``checkpoints.kept_checkpoint``)
then finds the same weights.
"""
from __future__ import annotations

from pathlib import Path

from trainer import checkpoints
from trainer.config import Config
from trainer.run_plan import RunPlan


def checkpoint_start(plan: RunPlan, cfg: Config, is_chief: bool, model, optimizer, evaluated, resumed: bool) -> None:
    """Checkpoint the starting weights (``checkpoints/start``) with their validation figures, so that
    ``keep: best`` can keep them: with ``train.validate_start`` (fine-tuning a pretrained model never
    ships one worse on validation than where it began), and for a run of 0 epochs (its model)."""
    if resumed or not ((cfg.train.validate_start and cfg.train.keep == "best") or cfg.train.epochs == 0):
        return
    from trainer import pipeline
    from trainer.evaluate import evaluate_split

    figures = {}
    if plan.eval_sets.get("val"):
        data = pipeline.ordered_images(plan.eval_sets["val"], plan.image_size, cfg.eval.eval_batch_size)
        figures = {f"val_{k}": v for k, v in evaluate_split(evaluated, data, cfg.eval).items()}
        if is_chief:
            print(f"starting weights: val_accuracy={figures['val_accuracy']:.4g}, val_auc={figures['val_auc']:.4g}",
                  flush=True)
    checkpoints.save(checkpoints.start_checkpoint_dir(plan.run_dir), model, optimizer,
                     {"epoch": -1, "compute": {}, "metrics": figures}, plan.config, is_chief)


def keep_best(run_dir: Path, keep: str, final_model, metrics: dict) -> dict:
    """With ``train.keep: best``, load the checkpoint of highest validation accuracy into the final
    model: an epoch's, or the starting weights' (``checkpoint_start``)."""
    kept = checkpoints.kept_checkpoint(run_dir, keep)
    if kept is None or kept == checkpoints.latest_checkpoint(run_dir):
        return metrics
    state = checkpoints.restore(kept, final_model)
    which = "the starting weights" if state["epoch"] < 0 else f"epoch {state['epoch'] + 1}"
    print(f"keeping {which} (best val_accuracy {state['metrics'].get('val_accuracy', float('nan')):.4f}) "
          "as the run's model", flush=True)
    return {**metrics, "kept_epoch": state["epoch"],
            **{f"kept_{k}": v for k, v in state["metrics"].items() if k.startswith("val_")}}
