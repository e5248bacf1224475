"""Train a FaceNet embedding with triplet loss on identity-balanced P×K batches, on Ray.

    python -m trainer.train --config experiments/celeba_nn4.yaml
    python -m trainer.train --config experiments/smoke.yaml --set train.epochs=1
    python -m trainer.train --resume runs/celeba_nn4-20261123-1700 --set train.epochs=20
    python -m trainer.train --config experiments/celeba_nn4.yaml --init-from runs/<run>/checkpoints/epoch-0011
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m trainer.train --config experiments/celeba_nn4.yaml

The driver (``main``) prepares the data (detect + align on Ray tasks, cached), splits identities,
writes the run directory and opens the MLflow run; then ``train_worker`` runs in every Ray Train
worker (``ray.num_workers`` of them, MultiWorkerMirroredStrategy across them), or in-process when
``ray.num_workers`` is 0. Triplets are mined over the *global* batch: each replica embeds its
share of the P×K batch, the embeddings and labels are all-gathered, and every replica computes the
same loss over all of them, as FaceNet mines within its ~1,800-face batches.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from trainer import checkpoints, cliargs, config as config_lib
from trainer.compute import ComputeCounters, epoch_counters
from trainer.config import Config, ConfigError, resolve_path
from trainer.prepare import DatasetError


# ----------------------------------------------------------------------------- driver: plan a run
_ALIGN_MODES = {"detect": True, "prealigned": "prealigned", "resized": False}  # SourceConfig.align -> prepare


def plan_run(cfg: Config, config_path: str | None, progress: bool = True, split=None) -> dict:
    """Prepare data, split identities and create the run directory; return the JSON-able plan.

    ``split`` (a ``splits.Split``) fixes which identities train, validate and test, for
    experiments that compare runs on changing data; by default the seeded split of the config.
    """
    from trainer.models import NATIVE_INPUT_SIZE
    from trainer.prepare import prepare
    from trainer.splits import Split, shard_paths, split_identities

    if not cfg.data.source:
        raise ConfigError("no dataset given: set data.source to an identity-folder root or tfds:<name>")
    size = cfg.model.input_size or NATIVE_INPUT_SIZE[cfg.model.name]
    cfg.data.source, cfg.data.cache_dir = resolve_path(cfg.data.source), resolve_path(cfg.data.cache_dir)
    cfg.train.out_dir = resolve_path(cfg.train.out_dir)
    for source in cfg.data.sources:  # every path checked before the first (long) alignment starts
        source.path = resolve_path(source.path)
        if not source.path.startswith("tfds:") and not Path(source.path).is_dir():
            raise DatasetError(f"data.sources entry {source.path} not found or not a directory "
                               f"(expected a folder of <identity>/<photo>.jpg)")
    teacher = cfg.train.teacher
    if teacher:
        from trainer.teacher import check_teacher

        check_teacher(teacher)  # a missing [teacher] extra is one line, before any alignment
    manifest = prepare(cfg.data.source, cfg.data.cache_dir, size, cfg.data.align, cfg.data.max_identities,
                       cfg.data.prepare_workers, cfg.ray.address, progress, teacher=teacher)
    aligned = {name: entry["aligned"] for name, entry in manifest["identities"].items()}
    if split is None:
        split = split_identities(aligned, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed,
                                 cfg.data.min_images_per_identity)
    train_shards = shard_paths(manifest, split.train)
    train_weights = [1.0] * len(train_shards)
    train_images = sum(aligned[n] for n in split.train)
    shards = {"val": shard_paths(manifest, split.val), "test": shard_paths(manifest, split.test)}
    counts = {"": manifest["counts"]}
    unlabeled: list[int] = []  # indices into train shards whose photos carry no trusted label
    for source in cfg.data.sources:
        name = config_lib.source_name(source)
        extra = prepare(source.path, cfg.data.cache_dir, size, _ALIGN_MODES[source.align], 0, cfg.data.prepare_workers,
                        cfg.ray.address, progress, teacher=teacher, max_per_identity=source.max_per_identity)
        counts[name] = extra["counts"]
        usable = {n: e["aligned"] for n, e in extra["identities"].items() if e["aligned"] >= cfg.data.min_images_per_identity}
        usable = usable if source.labeled else {n: e["aligned"] for n, e in extra["identities"].items() if e["aligned"]}
        own = split_identities(usable, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed, 2) \
            if source.split and source.labeled else Split(train=sorted(usable))
        split.train += [f"{name}/{n}" for n in own.train]
        split.val += [f"{name}/{n}" for n in own.val]
        split.test += [f"{name}/{n}" for n in own.test]
        train_shards += shard_paths(extra, own.train)
        train_weights += [source.weight] * len(own.train)
        if not source.labeled:
            unlabeled += range(len(train_shards) - len(own.train), len(train_shards))
        train_images += sum(usable[n] for n in own.train)
        shards["val"] += shard_paths(extra, own.val)
        shards["test"] += shard_paths(extra, own.test)
    if cfg.data.extra_source:
        cfg.data.extra_source = resolve_path(cfg.data.extra_source)
        extra = prepare(cfg.data.extra_source, cfg.data.cache_dir, size, False, 0, cfg.data.prepare_workers,
                        cfg.ray.address, progress, teacher=teacher)
        extra_names = sorted(n for n, e in extra["identities"].items() if e["aligned"] >= 1)
        train_shards += shard_paths(extra, extra_names)
        train_weights += [1.0] * len(extra_names)
        train_images += sum(extra["identities"][n]["aligned"] for n in extra_names)
    for bench in cfg.eval.benchmarks:  # checked now, evaluated when the run ends
        bench.pairs, bench.images = resolve_path(bench.pairs), resolve_path(bench.images)
        if not Path(bench.pairs).is_file() or not Path(bench.images).is_dir():
            raise DatasetError(f"eval.benchmarks: {bench.pairs} (pairs file) or {bench.images} (photo folder) not found")
    if len(train_shards) < cfg.train.identities_per_batch:
        raise DatasetError(f"the training split has {len(train_shards)} usable identities, fewer than "
                           f"train.identities_per_batch={cfg.train.identities_per_batch}")
    name = cfg.train.run_name or f"{Path(config_path).stem if config_path else 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = (Path(cfg.train.out_dir) / name).resolve()
    if (run_dir / "plan.json").exists():
        raise ConfigError(f"run directory {run_dir} already exists: choose another train.run_name, "
                          f"or continue it with --resume {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = {
        "config": cfg.to_dict(), "run_dir": str(run_dir), "run_name": name, "image_size": size,
        "manifest": manifest["path"], "data_fingerprint": manifest["fingerprint"],
        "data_counts": manifest["counts"], "source_counts": counts, "split": split.to_dict(),
        "shards": {"train": train_shards, **shards}, "train_weights": train_weights, "train_unlabeled": unlabeled,
        "train_images": train_images,
    }
    # Sets evaluated after every epoch (metrics "<name>_accuracy", ...); callers may add more.
    plan["eval_sets"] = {"val": plan["shards"]["val"]} if split.val else {}
    cfg.save(run_dir / "config.yaml")
    (run_dir / "plan.json").write_text(json.dumps(plan, indent=1))
    return plan


# ---------------------------------------------------------------------- worker: the training loop
def make_train_step(strategy, model, optimizer, loss_fn, margin: float, distance_metric: str, tcfg=None):
    """One optimizer step on a distributed P×K batch; returns (loss, active triplet fraction).

    Triplets are mined over the global batch: each replica embeds its share, embeddings and
    labels are all-gathered, and every replica computes the same loss over all of them. The
    optimizer sums the replicas' gradients, so each replica back-propagates loss / replicas;
    the gradient of all_gather carries every replica's share back to where it was computed.
    """
    import tensorflow as tf

    from trainer.distill import distillation_loss
    from trainer.losses import active_triplet_fraction

    metric_weight = tcfg.metric_weight if tcfg else 1.0
    distill = (tcfg.distill_weight, tcfg.distill_relational_weight) if tcfg and tcfg.teacher else (0.0, 0.0)

    def replica_step(images, labels, *teacher):
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            embeddings = model(images, training=True)
            # MultiWorkerMirroredStrategy's all_gather needs placed tensors; graph inputs may not be.
            with tf.device(embeddings.device):
                labels = tf.identity(labels)
                teacher = [tf.identity(t) for t in teacher]
            all_embeddings = context.all_gather(embeddings, axis=0)
            all_labels = context.all_gather(labels, axis=0)
            loss = loss_fn(all_labels, all_embeddings) * metric_weight if metric_weight else 0.0
            if any(distill):
                targets, mask = (context.all_gather(t, axis=0) for t in teacher)
                loss += distillation_loss(all_embeddings, targets, mask, *distill)
            scaled_loss = loss / tf.cast(context.num_replicas_in_sync, loss.dtype)
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss, active_triplet_fraction(all_labels, all_embeddings, margin, distance_metric)

    @tf.function
    def train_step(images, labels, *teacher):
        loss, active = strategy.run(replica_step, args=(images, labels, *teacher))
        return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.MEAN, active, axis=None))

    return train_step


def train_worker(plan: dict) -> dict:
    """Train on one worker; identical in-process and inside a Ray Train worker."""
    import tensorflow as tf
    import tf_keras as keras

    from trainer import pipeline
    from trainer.evaluate import evaluate_split
    from trainer.flops import forward_flops
    from trainer.losses import TripletHardLoss, TripletSemiHardLoss
    from trainer.models import build_model

    cfg = config_lib.from_dict(plan["config"])
    t, run_dir, size = cfg.train, Path(plan["run_dir"]), plan["image_size"]
    rank, world, in_ray = 0, 1, plan.get("in_ray", False)
    if in_ray:
        import ray.train

        rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    is_chief = rank == 0
    keras.utils.set_random_seed(t.seed + rank)
    replicas = strategy.num_replicas_in_sync
    if t.identities_per_batch % replicas:
        raise ConfigError(f"train.identities_per_batch={t.identities_per_batch} must be divisible by the "
                          f"{replicas} replicas")

    batch_size = t.identities_per_batch * t.images_per_identity
    steps = t.steps_per_epoch or max(1, plan["train_images"] // batch_size)
    keras.mixed_precision.set_global_policy(t.precision)
    with strategy.scope():
        model = build_model(cfg.model.name, cfg.model.embedding_dim, size)
        optimizer = make_optimizer(t, steps)
        optimizer.build(model.trainable_variables)
    loss_class = TripletSemiHardLoss if t.loss == "semihard" else TripletHardLoss
    loss_fn = loss_class(margin=t.margin, distance_metric=t.distance_metric)

    # Where to start from: the checkpoint Ray hands a restarted worker group > the run directory's
    # latest (--resume; also a restart whose last report Ray lost because the worker died before
    # the controller collected it; the chief writes it atomically before every report, on storage
    # every worker sees, as /runs in k8s/) > --init-from (weights only).
    state, start_epoch, counters = {}, 0, ComputeCounters()
    ray_checkpoint = ray.train.get_checkpoint() if in_ray else None
    own_latest = checkpoints.latest_checkpoint(run_dir)
    if ray_checkpoint is not None:
        with ray_checkpoint.as_directory() as directory:
            state = checkpoints.restore(directory, model, optimizer)
    elif own_latest is not None:
        state = checkpoints.restore(own_latest, model, optimizer)
    elif plan.get("init_from"):
        checkpoints.restore(plan["init_from"], model)
    if state:
        start_epoch, counters = state["epoch"] + 1, ComputeCounters.from_dict(state["compute"])
        if is_chief:
            print(f"resuming after epoch {state['epoch'] + 1} (checkpoint of epoch index {state['epoch']})", flush=True)

    train_shards, labels = plan["shards"]["train"], list(range(len(plan["shards"]["train"])))
    for i in plan.get("train_unlabeled", []):
        labels[i] = -1  # pipeline.pk_batches: each photo a person of its own

    def dataset_fn(ctx: tf.distribute.InputContext):
        # Each input pipeline draws from its own identities: P/replicas identities × K images.
        i, n = ctx.input_pipeline_id, ctx.num_input_pipelines
        weights = plan.get("train_weights") or None
        return pipeline.pk_batches(train_shards[i::n], labels[i::n], t.identities_per_batch // replicas,
                                   t.images_per_identity, size, t.augment, seed=t.seed + i, teacher=t.teacher,
                                   weights=weights[i::n] if weights else None, strong=t.augment_strength == "strong")

    batches = iter(strategy.distribute_datasets_from_function(dataset_fn))

    train_step = make_train_step(strategy, model, optimizer, loss_fn, t.margin, t.distance_metric, t)

    flops_per_image = forward_flops(model, size)
    gpus = world if cfg.ray.use_gpu else 0
    tracker = _chief_tracker(plan, cfg) if is_chief else None
    eval_sets = {name: pipeline.ordered_images(shards, size, cfg.eval.eval_batch_size)
                 for name, shards in plan.get("eval_sets", {}).items() if shards}
    stop_when = config_lib.parse_stop_when(t.stop_when)
    metrics: dict = dict(state.get("metrics", {}))

    for epoch in range(start_epoch, t.epochs):
        bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "active"], verbose=1 if is_chief else 0)
        started, input_wait = time.time(), 0.0
        losses, actives = [], []
        show_every = max(1, steps // 20)  # reading a value back waits for the step: only for progress
        for step in range(steps):
            waiting = time.perf_counter()
            batch = next(batches)
            input_wait += time.perf_counter() - waiting
            loss, active = train_step(*batch)
            losses.append(loss)
            actives.append(active)
            if (step + 1) % show_every == 0 or step + 1 == steps:
                bar.update(step + 1, [("loss", float(tf.reduce_mean(losses))), ("active", float(tf.reduce_mean(actives)))])
        loss_sum, active_sum = float(tf.reduce_sum(losses)), float(tf.reduce_sum(actives))
        epoch_compute = epoch_counters(steps, batch_size, time.time() - started, flops_per_image, world, gpus)
        counters.add(epoch_compute)
        # input_wait_fraction: share of the epoch spent waiting for the next batch (0 = never starved)
        metrics = {"epoch": epoch, "loss": loss_sum / steps, "active_triplet_fraction": active_sum / steps,
                   "input_wait_fraction": input_wait / max(epoch_compute.wall_seconds, 1e-9),
                   **epoch_compute.as_metrics("compute/epoch_"), **counters.as_metrics("compute/total_")}
        for name, data in eval_sets.items():
            metrics.update({f"{name}_{k}": v for k, v in evaluate_split(model, data, cfg.eval).items()})
        if is_chief:
            print(f"epoch {epoch + 1}/{t.epochs}: " + ", ".join(
                f"{k}={metrics[k]:.4g}" for k in ("loss", "active_triplet_fraction", "val_accuracy", "val_val", "val_auc")
                if k in metrics), flush=True)
        ckpt = checkpoints.save(checkpoints.checkpoint_dir(run_dir, epoch), model, optimizer,
                                {"epoch": epoch, "compute": counters.as_dict(), "metrics": metrics},
                                plan["config"], is_chief)
        if tracker:
            tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        if in_ray:
            from ray.train import Checkpoint

            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(ckpt)) if is_chief else None)
        if stop_when and all(metrics.get(name, float("-inf")) >= value for name, value in stop_when):
            if is_chief:
                print(f"stopping after epoch {epoch + 1}: {t.stop_when} holds", flush=True)
            break

    # Reading batch-norm statistics is a collective under MultiWorkerMirroredStrategy: every worker
    # takes part once here, then the chief evaluates and exports a plain (undistributed) copy.
    weights = model.get_weights()
    if not is_chief:
        return metrics
    keras.mixed_precision.set_global_policy("float32")  # the exported model computes in float32
    final_model = build_model(cfg.model.name, cfg.model.embedding_dim, size)
    final_model.set_weights(weights)
    kept = checkpoints.best_checkpoint(run_dir, "val_accuracy") if t.keep == "best" else None
    if kept is not None and kept != checkpoints.latest_checkpoint(run_dir):
        state = checkpoints.restore(kept, final_model)
        print(f"keeping epoch {state['epoch'] + 1} (best val_accuracy "
              f"{state['metrics'].get('val_accuracy', float('nan')):.4f}) as the run's model", flush=True)
        metrics = {**metrics, "kept_epoch": state["epoch"],
                   **{f"kept_{k}": v for k, v in state["metrics"].items() if k.startswith("val_")}}
    return _finish(plan, cfg, final_model, counters, metrics, tracker)


def make_optimizer(t, steps_per_epoch: int):
    """The configured optimizer, with its learning-rate schedule (constant, or linear warm-up then cosine
    decay to 0 over the run) and decoupled weight decay (AdamW) when asked."""
    import tf_keras as keras

    rate = t.learning_rate
    if t.lr_schedule == "cosine":
        total = max(1, t.epochs * steps_per_epoch)
        warmup = min(t.warmup_epochs * steps_per_epoch, total - 1)
        rate = keras.optimizers.schedules.CosineDecay(0.0 if warmup else t.learning_rate, total - warmup,
                                                      warmup_target=t.learning_rate if warmup else None,
                                                      warmup_steps=warmup)
    if t.optimizer == "adagrad":
        return keras.optimizers.Adagrad(rate)
    if t.weight_decay:
        return keras.optimizers.AdamW(rate, weight_decay=t.weight_decay)
    return keras.optimizers.Adam(rate)


def _chief_tracker(plan: dict, cfg: Config):
    if not plan.get("mlflow_run_id"):
        return None
    from trainer import tracking

    tracking.start(plan["tracking_uri"], cfg.mlflow.experiment, plan["run_name"], run_id=plan["mlflow_run_id"])
    import mlflow

    return mlflow


def _finish(plan: dict, cfg: Config, model, counters: ComputeCounters, last_epoch: dict, tracker) -> dict:
    """Test-split evaluation with plots, model export and results.json (chief only)."""
    from trainer import pipeline
    from trainer.evaluate import evaluate_split

    run_dir = Path(plan["run_dir"])
    results = {"last_epoch": last_epoch, "compute": counters.as_dict()}
    if plan["shards"]["test"]:
        test_data = pipeline.ordered_images(plan["shards"]["test"], plan["image_size"], cfg.eval.eval_batch_size)
        out = run_dir / "eval-test"
        out.mkdir(exist_ok=True)
        results["test"] = evaluate_split(model, test_data, cfg.eval, out_dir=out, plots=True)
    model.save(str(run_dir / "model"), include_optimizer=False)
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    if tracker:
        tracker.log_metrics({f"test_{k}": v for k, v in results.get("test", {}).items()})
        tracker.log_metrics(counters.as_metrics("compute/total_"))
        for name in ("results.json", "config.yaml", "plan.json"):
            tracker.log_artifact(str(run_dir / name))
        if (run_dir / "eval-test").exists():
            tracker.log_artifacts(str(run_dir / "eval-test"), "eval-test")
        tracker.log_artifacts(str(run_dir / "model"), "model")
        kept = checkpoints.kept_checkpoint(run_dir, cfg.train.keep)
        if kept:
            tracker.log_artifacts(str(kept), f"checkpoint/{kept.name}")
        tracker.end_run()
    return results


def run_benchmarks(plan: dict, cfg: Config) -> dict:
    """The run's kept model on every ``eval.benchmarks`` entry (LFW's protocol), on the driver once
    training ended (its alignment needs Ray's CPUs, which the training workers held): reports in
    eval-<name>/, figures in results.json and the run's MLflow run (``bench_<name>_<metric>``)."""
    if not cfg.eval.benchmarks:
        return {}
    from trainer.evaluation.benchmark import benchmark_name, evaluate_benchmark, log_to_run

    model = checkpoints.load_run(plan["run_dir"])[0]
    found = {}
    for bench in cfg.eval.benchmarks:
        name = benchmark_name(bench.pairs, bench.name or None)
        found[name] = evaluate_benchmark(model, bench.pairs, bench.images, cfg.data.cache_dir, plan["image_size"],
                                         cfg.eval.far_target, Path(plan["run_dir"]) / f"eval-{name}",
                                         cfg.eval.eval_batch_size, bench.numbering, cfg.ray.address)
        print(f"benchmark {name}: accuracy {found[name]['accuracy']:.4f} ± {found[name]['accuracy_std']:.4f}, "
              f"AUC {found[name]['auc']:.4f} ({int(found[name]['pairs'])} pairs)", flush=True)
        log_to_run(plan, name, found[name], Path(plan["run_dir"]) / f"eval-{name}")
    results_file = Path(plan["run_dir"]) / "results.json"
    results_file.write_text(json.dumps({**json.loads(results_file.read_text()), "benchmarks": found}, indent=1))
    return found


# ------------------------------------------------------------------------------- driver: launch
def launch(plan: dict, cfg: Config) -> dict:
    """Run ``train_worker`` in-process (ray.num_workers == 0) or on Ray Train workers."""
    if cfg.ray.num_workers == 0:
        return train_worker(plan)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from trainer.ray_setup import ensure_ray

    ensure_ray(cfg.ray.address)
    resources = {"CPU": cfg.ray.cpus_per_worker, **({"GPU": cfg.ray.gpus_per_worker} if cfg.ray.use_gpu else {})}
    trainer_ = TensorflowTrainer(
        train_loop_per_worker=train_worker,
        train_loop_config={**plan, "in_ray": True},
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=plan["run_name"], storage_path=str(Path(plan["run_dir"]) / "ray"),
                             failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer_.fit()
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    return json.loads((Path(plan["run_dir"]) / "results.json").read_text())


def run_tracked(plan: dict, cfg: Config) -> dict:
    """Open the run's MLflow run, train, then evaluate the benchmarks (what every caller of a plan needs)."""
    _open_tracking(plan, cfg)
    results = launch(plan, cfg)
    return {**results, "benchmarks": run_benchmarks(plan, cfg)}


def main(argv: list[str] | None = None) -> int:
    parser = cliargs.ArgumentParser(description="Train a FaceNet embedding (see the module docstring).")
    parser.add_argument("--config", help="experiment YAML, e.g. experiments/celeba_nn4.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a finished or interrupted run")
    parser.add_argument("--init-from", metavar="CHECKPOINT", help="warm start: initial weights from a checkpoint or run")
    args = parser.parse_args(argv)
    try:
        if args.resume:
            plan, cfg = _resume_plan(resolve_path(args.resume), args.set)
        else:
            if not args.config and not args.set:
                raise ConfigError("give --config experiments/<name>.yaml (or --resume RUN_DIR)")
            cfg = config_lib.load(args.config, args.set)
            init_from = args.init_from or cfg.train.init_from
            if init_from:
                init_from = str(checkpoints.resolve_checkpoint(resolve_path(init_from)))
            plan = plan_run(cfg, args.config)
            plan["init_from"] = init_from or ""
        results = run_tracked(plan, cfg)
    except (ConfigError, DatasetError, OSError) as exc:
        print(f"error: {cliargs.one_line(exc)}", file=sys.stderr)
        return 2
    test = results.get("test", {})
    print(f"run: {plan['run_dir']}")
    if test:
        print(f"test: accuracy={test['accuracy']:.4f}±{test['accuracy_std']:.4f} VAL@FAR={test['far']:.2g}: "
              f"{test['val']:.4f} AUC={test['auc']:.4f}")
    total = results["compute"]
    print(f"compute: steps={total['steps']} images={total['images']} train_flops={total['train_flops']:.3g} "
          f"wall_seconds={total['wall_seconds']:.1f}")
    return 0


def _resume_plan(run_dir: str, overrides: list[str]) -> tuple[dict, Config]:
    plan_file = Path(run_dir) / "plan.json"
    if not plan_file.exists():
        raise FileNotFoundError(f"not a run directory (no plan.json): {run_dir}")
    try:
        plan = json.loads(plan_file.read_text())
    except ValueError as exc:
        raise ConfigError(f"not a run directory ({plan_file} is not JSON: {exc})") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("config"), dict):
        raise ConfigError(f"not a run directory ({plan_file} holds no config)")
    cfg = config_lib.from_dict(config_lib.apply_overrides(plan["config"], overrides))
    plan["config"] = cfg.to_dict()
    latest = checkpoints.latest_checkpoint(run_dir)
    plan["resume_from"] = str(latest) if latest else ""
    (Path(run_dir) / "plan.json").write_text(json.dumps(plan, indent=1))
    return plan, cfg


def _open_tracking(plan: dict, cfg: Config) -> None:
    """Create (or reopen) the run's MLflow run on the driver; the chief worker logs into it."""
    import mlflow

    from trainer import tracking

    plan["tracking_uri"] = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    run = tracking.start(plan["tracking_uri"], cfg.mlflow.experiment, plan["run_name"],
                         run_id=plan.get("mlflow_run_id") or None, parent_run_id=plan.get("parent_run_id"))
    if not plan.get("mlflow_run_id"):
        mlflow.log_params(cfg.flat())
        mlflow.set_tags({"git_commit": tracking.git_commit(Path(__file__).parent), "data_fingerprint":
                         plan["data_fingerprint"], "model": cfg.model.name, "run_dir": plan["run_dir"],
                         "init_from": plan.get("init_from", "")})
        mlflow.log_dict(plan["split"], "split.json")
        mlflow.log_dict(plan["data_counts"], "data_counts.json")
    plan["mlflow_run_id"] = run.info.run_id
    (Path(plan["run_dir"]) / "plan.json").write_text(json.dumps(plan, indent=1))
    mlflow.end_run()


if __name__ == "__main__":
    sys.exit(main())
