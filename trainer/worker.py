"""The training loop every worker runs: in-process, or inside a Ray Train worker.

``train_worker(plan)`` (``ray_train_worker`` inside Ray) reads top to bottom: set up the replica
context, build the model and optimizer, restore where to start from, then one epoch after another
(train, validate, checkpoint, report), and finally keep the best epoch and evaluate the test split
(chief only). Triplets are mined over the *global* batch: each replica embeds its share of the P×K
batch, the embeddings and labels are all-gathered, and every replica computes the same loss over
all of them, as FaceNet mines within its ~1,800-face batches (trainer/train_step.py). A
distillation term (trainer/distill.py) joins the loss when the run has a teacher.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from trainer import checkpoints, config as config_lib, keep, run_results
from trainer.compute_counters import ComputeCounters, epoch_counters
from trainer.config import Config, ConfigError
from trainer.run_plan import PLAN_FILE, RunPlan
from trainer.train_step import make_train_step, metric_loss


@dataclass
class _Replica:
    strategy: object
    rank: int
    world: int
    in_ray: bool

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def ray_train_worker(config: dict) -> dict:
    """Ray Train's entry point: its ``train_loop_config`` is a plain dict, ``{"plan": plan.to_dict()}``."""
    return train_worker(RunPlan.from_dict(config["plan"]), in_ray=True)


def train_worker(plan: RunPlan, in_ray: bool = False) -> dict:
    """Train on one worker; identical in-process and inside a Ray Train worker (``in_ray``)."""
    import tf_keras as keras

    from trainer.cpu_features import bf16_warning
    from trainer.flops import forward_flops
    from trainer.models import build_model
    from trainer.models.mirror import inference_model
    from trainer.optimizers import make_optimizer

    cfg = config_lib.from_dict(plan.config)
    t, run_dir, size = cfg.train, Path(plan.run_dir), plan.image_size
    replica = _replica(cfg, in_ray)
    steps = t.steps_per_epoch or max(1, plan.train_images // (t.identities_per_batch * t.images_per_identity))
    keras.mixed_precision.set_global_policy(t.precision)
    if replica.is_chief and (warning := bf16_warning(t.precision, on_gpu=cfg.ray.use_gpu)):
        print(warning, flush=True)
    with replica.strategy.scope():
        model = build_model(cfg.model.name, cfg.model.embedding_dim, size)
        optimizer = make_optimizer(t, steps)
        head = _margin_head(t, plan.shards.train, cfg.model.embedding_dim)
        optimizer.build(model.trainable_variables + (list(head.trainable_variables) if head else []))
    loss_fn = metric_loss(t)
    state = _restore(plan, replica, model, optimizer, head)
    counters = ComputeCounters.from_dict(state["compute"]) if state else ComputeCounters()
    batches = iter(replica.strategy.distribute_datasets_from_function(_dataset_fn(plan, cfg, replica)))
    train_step = make_train_step(replica.strategy, model, optimizer, loss_fn, t.margin, t.distance_metric, t, head)
    flops_per_image = forward_flops(model, size)
    tracker = _chief_tracker(plan, cfg) if replica.is_chief else None
    metrics: dict = dict(state.get("metrics", {}))
    evaluated = inference_model(model, cfg.model.mirror_average)  # what validation measures is what ships
    keep.checkpoint_start(plan, cfg, replica.is_chief, model, optimizer, evaluated, resumed=bool(state))
    for epoch in range(state["epoch"] + 1 if state else 0, t.epochs):
        metrics = _run_epoch(epoch, steps, batches, train_step, plan, cfg, replica, flops_per_image, counters,
                             evaluated)
        _checkpoint_and_report(epoch, metrics, plan, replica, model, optimizer, head, counters, tracker)
        if _should_stop(t.stop_when, metrics):
            if replica.is_chief:
                print(f"stopping after epoch {epoch + 1}: {t.stop_when} holds", flush=True)
            break
    # Reading batch-norm statistics is a collective under MultiWorkerMirroredStrategy: every worker
    # takes part once here, then the chief evaluates and exports a plain (undistributed) copy.
    weights = model.get_weights()
    if not replica.is_chief:
        return metrics
    keras.mixed_precision.set_global_policy("float32")  # the exported model computes in float32
    final_model = build_model(cfg.model.name, cfg.model.embedding_dim, size)
    final_model.set_weights(weights)
    metrics = keep.keep_best(run_dir, t.keep, final_model, metrics)
    return _finish(plan, cfg, inference_model(final_model, cfg.model.mirror_average), counters, metrics, tracker)


def _replica(cfg: Config, in_ray: bool) -> _Replica:
    import tensorflow as tf
    import tf_keras as keras

    rank, world, seed = 0, 1, cfg.train.seed
    if in_ray:
        import ray.train

        rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    keras.utils.set_random_seed(seed + rank)
    if cfg.train.identities_per_batch % strategy.num_replicas_in_sync:
        raise ConfigError(f"train.identities_per_batch={cfg.train.identities_per_batch} must be divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas")
    return _Replica(strategy, rank, world, in_ray)


def _margin_head(t, shards: list[str], dim: int):
    """The margin-softmax head over the training people (``train.margin_softmax``; a class per training
    shard, the label pk_batches gives its photos), or None."""
    if not t.margin_softmax:
        return None
    from trainer.margin_softmax import MarginHead, teacher_centres

    centres = None
    if t.margin_softmax_centres == "teacher":
        from trainer.teacher_cache import cached_embeddings

        centres = teacher_centres([cached_embeddings([shard], t.teacher) for shard in shards])
    return MarginHead(len(shards), dim, t.margin_softmax, t.margin_softmax_scale, t.margin_softmax_margin, t.seed,
                      centres)


def _restore(plan: RunPlan, replica: _Replica, model, optimizer, head) -> dict:
    """Where to start from: the checkpoint Ray hands a restarted worker group > the run directory's
    latest (--resume; also a restart whose last report Ray lost because the worker died before the
    controller collected it; the chief writes it atomically before every report, on storage every
    worker sees, as /runs in k8s/) > --init-from (weights only: a warm start's head is new). Resuming
    restores the margin head too. Returns the restored state ({} = none)."""
    state = {}
    ray_checkpoint = None
    if replica.in_ray:
        import ray.train

        ray_checkpoint = ray.train.get_checkpoint()
    own_latest = checkpoints.latest_checkpoint(plan.run_dir)
    if ray_checkpoint is not None:
        with ray_checkpoint.as_directory() as directory:
            state = checkpoints.restore(directory, model, optimizer, head)
    elif own_latest is not None:
        state = checkpoints.restore(own_latest, model, optimizer, head)
    elif plan.init_from:
        checkpoints.restore(plan.init_from, model)
    if state and replica.is_chief:
        print(f"resuming after epoch {state['epoch'] + 1} (checkpoint of epoch index {state['epoch']})", flush=True)
    return state


def _dataset_fn(plan: RunPlan, cfg: Config, replica: _Replica):
    """Each input pipeline draws from its own identities: P/replicas identities × K images."""
    from trainer import pipeline

    t, replicas = cfg.train, replica.strategy.num_replicas_in_sync
    shards, labels = plan.shards.train, list(range(len(plan.shards.train)))
    for i in plan.train_unlabeled:
        labels[i] = -1  # pipeline.pk_batches: each photo a person of its own
    weights = plan.train_weights or None
    if t.sampling == "photos" and plan.train_photos:  # every photo equally likely, not every person
        weights = [w * n for w, n in zip(weights or [1.0] * len(shards), plan.train_photos)]

    def dataset_fn(ctx):
        i, n = ctx.input_pipeline_id, ctx.num_input_pipelines
        return pipeline.pk_batches(shards[i::n], labels[i::n], t.identities_per_batch // replicas,
                                   t.images_per_identity, plan.image_size, t.augment, seed=t.seed + i,
                                   teacher=t.teacher, weights=weights[i::n] if weights else None,
                                   strong=t.augment_strength == "strong", views=t.teacher_views)

    return dataset_fn


def _run_epoch(epoch: int, steps: int, batches, train_step, plan: RunPlan, cfg: Config, replica: _Replica,
               flops_per_image: float, counters: ComputeCounters, evaluated) -> dict:
    """Train one epoch with a progress bar, then validate ``evaluated`` (the inference model); returns
    the epoch's metrics."""
    import tensorflow as tf
    import tf_keras as keras

    from trainer import pipeline
    from trainer.evaluate import evaluate_split

    t = cfg.train
    bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "active"], verbose=1 if replica.is_chief else 0)
    started, input_wait, losses, actives, terms = time.time(), 0.0, [], [], {}
    show_every = max(1, steps // 20)  # reading a value back waits for the step: only for progress
    for step in range(steps):
        waiting = time.perf_counter()
        batch = next(batches)
        input_wait += time.perf_counter() - waiting
        loss, active, step_terms = train_step(*batch)
        losses.append(loss)
        actives.append(active)
        for name, value in step_terms.items():
            terms.setdefault(name, []).append(value)
        if (step + 1) % show_every == 0 or step + 1 == steps:
            bar.update(step + 1, [("loss", float(tf.reduce_mean(losses))), ("active", float(tf.reduce_mean(actives)))])
    epoch_compute = epoch_counters(steps, t.identities_per_batch * t.images_per_identity, time.time() - started,
                                   flops_per_image, replica.world, replica.world if cfg.ray.use_gpu else 0)
    counters.add(epoch_compute)
    # input_wait_fraction: share of the epoch spent waiting for the next batch (0 = never starved)
    metrics = {"epoch": epoch, "loss": float(tf.reduce_sum(losses)) / steps,
               "active_triplet_fraction": float(tf.reduce_sum(actives)) / steps,
               "input_wait_fraction": input_wait / max(epoch_compute.wall_seconds, 1e-9),
               **{name: float(tf.reduce_sum(values)) / steps for name, values in terms.items()},
               **epoch_compute.as_metrics("compute/epoch_"), **counters.as_metrics("compute/total_")}
    for name, shards in plan.eval_sets.items():
        if shards:
            data = pipeline.ordered_images(shards, plan.image_size, cfg.eval.eval_batch_size)
            metrics.update({f"{name}_{k}": v for k, v in evaluate_split(evaluated, data, cfg.eval).items()})
    if replica.is_chief:
        print(f"epoch {epoch + 1}/{t.epochs}: " + ", ".join(
            f"{k}={metrics[k]:.4g}" for k in ("loss", *sorted(terms), "active_triplet_fraction", "val_accuracy",
                                              "val_val", "val_auc") if k in metrics), flush=True)
    return metrics


def _checkpoint_and_report(epoch: int, metrics: dict, plan: RunPlan, replica: _Replica, model, optimizer, head,
                           counters: ComputeCounters, tracker) -> None:
    ckpt = checkpoints.save(checkpoints.checkpoint_dir(plan.run_dir, epoch), model, optimizer,
                            {"epoch": epoch, "compute": counters.as_dict(), "metrics": metrics},
                            plan.config, replica.is_chief, head)
    if tracker:
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
    if replica.in_ray:
        import ray.train
        from ray.train import Checkpoint

        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(ckpt)) if replica.is_chief else None)


def _should_stop(stop_when: str, metrics: dict) -> bool:
    conditions = config_lib.parse_stop_when(stop_when)
    return bool(conditions) and all(metrics.get(name, float("-inf")) >= value for name, value in conditions)


def _chief_tracker(plan: RunPlan, cfg: Config):
    if not plan.mlflow_run_id:
        return None
    from trainer import tracking

    tracking.start(plan.tracking_uri, cfg.mlflow.experiment, plan.run_name, run_id=plan.mlflow_run_id)
    import mlflow

    return mlflow


def _finish(plan: RunPlan, cfg: Config, model, counters: ComputeCounters, last_epoch: dict, tracker) -> dict:
    """Test-split evaluation with plots, model export and results.json (chief only)."""
    from trainer import pipeline
    from trainer.evaluate import evaluate_split

    run_dir = Path(plan.run_dir)
    results = {"last_epoch": last_epoch, "compute": counters.as_dict()}
    if plan.shards.test:
        test_data = pipeline.ordered_images(plan.shards.test, plan.image_size, cfg.eval.eval_batch_size)
        out = run_dir / "eval-test"
        out.mkdir(exist_ok=True)
        results["test"] = evaluate_split(model, test_data, cfg.eval, out_dir=out, plots=True)
    model.save(str(run_dir / "model"), include_optimizer=False)
    run_results.save(run_dir, results)
    if tracker:
        tracker.log_metrics({f"test_{k}": v for k, v in results.get("test", {}).items()})
        tracker.log_metrics(counters.as_metrics("compute/total_"))
        for name in (run_results.RESULTS_FILE, "config.yaml", PLAN_FILE):
            tracker.log_artifact(str(run_dir / name))
        if (run_dir / "eval-test").exists():
            tracker.log_artifacts(str(run_dir / "eval-test"), "eval-test")
        tracker.log_artifacts(str(run_dir / "model"), "model")
        kept = checkpoints.kept_checkpoint(run_dir, cfg.train.keep)
        if kept:
            tracker.log_artifacts(str(kept), f"checkpoint/{kept.name}")
        tracker.end_run()
    return results
