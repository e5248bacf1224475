"""Train a FaceNet embedding with triplet loss on identity-balanced P×K batches, on Ray.

    python -m trainer.train --config experiments/celeba_nn4.yaml
    python -m trainer.train --config experiments/smoke.yaml --set train.epochs=1
    python -m trainer.train --resume runs/celeba_nn4-20261123-1700 --set train.epochs=20
    python -m trainer.train --config experiments/celeba_nn4.yaml --init-from runs/<run>/checkpoints/epoch-0011
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m trainer.train --config experiments/celeba_nn4.yaml

The driver (``main``) plans the run (trainer/plan.py: detect + align on Ray tasks, cached; split
identities; write the run directory) and opens its MLflow run; then ``train_worker``
(trainer/worker.py) runs in every Ray Train worker (``ray.num_workers`` of them,
MultiWorkerMirroredStrategy across them), or in-process when ``ray.num_workers`` is 0; finally the
driver evaluates the kept model on the config's benchmarks (trainer/evaluation/benchmark.py).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from trainer import checkpoints, cliargs, config as config_lib, console, run_results
from trainer.config import Config, ConfigError, resolve_path
from trainer.evaluation.benchmark import run_benchmarks
from trainer.plan import new_run_dir, open_tracking, plan_run, resume_plan
from trainer.prepare import DatasetError
from trainer.run_plan import RunPlan
from trainer.train_step import make_train_step
from trainer.worker import ray_train_worker, train_worker

LOG_NAME = "train.log"  # in the run directory; --resume appends to it

__all__ = ["launch", "main", "make_train_step", "plan_run", "resume_plan", "run_tracked", "train_worker"]


# ------------------------------------------------------------------------------- driver: launch
def launch(plan: RunPlan, cfg: Config) -> dict:
    """Run ``train_worker`` in-process (ray.num_workers == 0) or on Ray Train workers."""
    if cfg.ray.num_workers == 0:
        return train_worker(plan)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from trainer.ray_setup import ensure_ray

    ensure_ray(cfg.ray.address)
    resources = {"CPU": cfg.ray.cpus_per_worker, **({"GPU": cfg.ray.gpus_per_worker} if cfg.ray.use_gpu else {})}
    trainer_ = TensorflowTrainer(
        train_loop_per_worker=ray_train_worker,
        train_loop_config={"plan": plan.to_dict()},  # a plain dict: Ray passes it to every worker
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=plan.run_name, storage_path=str(Path(plan.run_dir) / "ray"),
                             failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer_.fit()
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    return run_results.load(plan.run_dir)


def run_tracked(plan: RunPlan, cfg: Config) -> dict:
    """Open the run's MLflow run, train, then evaluate the benchmarks (what every caller of a plan needs)."""
    open_tracking(plan, cfg)
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
        plan, cfg, run_dir = _plan_or_resume(args)
        init_from = _init_from(args, cfg) if plan is None else ""  # a bad checkpoint is refused before preparation
    except (ConfigError, DatasetError, OSError) as exc:
        print(f"error: {cliargs.one_line(exc)}", file=sys.stderr)
        return 2
    # The terminal gets stage headers, the chief's progress bar, epoch lines and results; the run's
    # train.log gets everything (TensorFlow's and Ray's logs included). See trainer/console.py.
    created = _first_missing(run_dir)  # what the log file's directories add, removed again if refused
    with console.capture(run_dir / LOG_NAME) as log:
        print(f"full log: {log.path}", flush=True)
        try:
            if plan is None:  # a new run: prepare its data (minutes on a cold cache) with the log open
                plan = plan_run(cfg, args.config, run_dir=run_dir)
                plan.init_from = init_from  # saved with the plan by open_tracking
            results = run_tracked(plan, cfg)
        except (ConfigError, DatasetError, OSError) as exc:
            print(f"error: {cliargs.one_line(exc)}", file=sys.stderr)
            refused = plan is None
        else:
            _print_results(plan, results)
            return 0
    if refused and created:  # refused before anything was planned: leave no run directory behind
        shutil.rmtree(created, ignore_errors=True)
    return 2


def _first_missing(path: Path) -> Path | None:
    """The outermost directory on the way to ``path`` that does not exist yet (None: all do)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            return missing
        missing = folder
    return missing


def _plan_or_resume(args) -> tuple[RunPlan | None, Config, Path]:
    """A resumed run's plan, or (before any data is prepared) a new run's config and directory."""
    if args.resume:
        plan, cfg = resume_plan(resolve_path(args.resume), args.set)
        return plan, cfg, Path(plan.run_dir)
    if not args.config and not args.set:
        raise ConfigError("give --config experiments/<name>.yaml (or --resume RUN_DIR)")
    cfg = config_lib.load(args.config, args.set)
    return None, cfg, new_run_dir(cfg, args.config)


def _init_from(args, cfg: Config) -> str:
    init_from = args.init_from or cfg.train.init_from
    return str(checkpoints.resolve_checkpoint(resolve_path(init_from))) if init_from else ""


def _print_results(plan: RunPlan, results: dict) -> None:
    test = results.get("test", {})
    print(f"run: {plan.run_dir}")
    if test:
        print(f"test: accuracy={test['accuracy']:.4f}±{test['accuracy_std']:.4f} VAL@FAR={test['far']:.2g}: "
              f"{test['val']:.4f} AUC={test['auc']:.4f}")
    total = results["compute"]
    print(f"compute: steps={total['steps']} images={total['images']} train_flops={total['train_flops']:.3g} "
          f"wall_seconds={total['wall_seconds']:.1f}")


if __name__ == "__main__":
    sys.exit(main())
