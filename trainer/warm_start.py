"""How a warm start (N_adpt) differs from the run it starts from: one owner for all its callers.

The enrolment retraining job (enroll/retrain_job.py), the warm-versus-full experiments
(experiments/warm_vs_full.py, experiments/continual_rounds.py) and the lifecycle all warm-start a
copy of a base run's config. They differ only in their budget, learning-rate scale and stopping
rule, so those are the arguments; everything else (the model, the data sources, the loss and its
distillation term, the schedule's shape) is the base run's.
"""
from __future__ import annotations

from trainer.config import Config, from_dict


def stop_at(targets: dict[str, float], tolerance: float = 0.0) -> str:
    """``train.stop_when`` that holds once every ``metric`` reaches ``value - tolerance``."""
    return ",".join(f"{metric}>={value - tolerance:.4f}" for metric, value in targets.items())


def warm_start_config(base: Config, *, epochs: int | None = None, steps_per_epoch: int | None = None,
                      learning_rate_scale: float = 1.0, warmup_epochs: int | None = None, stop_when: str = "",
                      run_name: str = "", out_dir: str = "") -> Config:
    """A copy of ``base`` for a warm start: ``epochs`` / ``steps_per_epoch`` as its budget and
    ``warmup_epochs`` (None keeps the base run's), its learning rate × ``learning_rate_scale``,
    ``stop_when`` as its stopping rule. The initial weights are the plan's ``init_from``, not part
    of the config."""
    cfg = from_dict(base.to_dict())
    if epochs is not None:
        cfg.train.epochs = epochs
    if steps_per_epoch is not None:
        cfg.train.steps_per_epoch = steps_per_epoch
    cfg.train.learning_rate *= learning_rate_scale
    if warmup_epochs is not None:
        cfg.train.warmup_epochs = warmup_epochs
    cfg.train.stop_when = stop_when
    # The gate judges a warm start against production: a candidate that kept its starting weights
    # (train.validate_start) would be production itself, retrained for nothing.
    cfg.train.validate_start = False
    cfg.train.run_name = run_name or cfg.train.run_name
    cfg.train.out_dir = out_dir or cfg.train.out_dir
    if cfg.train.margin_softmax:
        # A learned class head's people change with every warm start, so its saved weights do not fit: a fresh,
        # random head's first gradients would pull the trained embedding apart before it had learned
        # anything. A head fixed at the teacher's centres could be rebuilt for the warm start's people,
        # but keeping it let the lifecycle's gate promote a warm start that named fewer of the enrolled
        # people's real photos (README, lifecycle run 8). Warm starts train on the other terms.
        cfg.train.margin_softmax, cfg.train.margin_softmax_centres = "", "learned"
        cfg.train.centre_distill_weight = 0.0  # its soft targets are over the head's centres
        if not (cfg.train.metric_weight or cfg.train.distill_weight or cfg.train.distill_relational_weight):
            cfg.train.metric_weight = 1.0
    return cfg
