"""The warm-start retraining job, run as a Ray job (``enroll retrain`` submits it).

    python -m enroll.retrain_job --home .facenet --job 7

1. Export every enrolled person's aligned crops but their held-out one (removed people are gone
   from the gallery, so they are left out of training) and train from the production weights ({w}_orig) on the
   production run's base data plus those people, replaying the old identities in every P×K batch.
   It stops once validation accuracy is back at the production run's, or at its budget
   (``enroll.yaml``); MLflow records it with the compute counters (N_adpt).
2. Promotion gate (enroll/gate.py): production and candidate, each with τ at the home's FAR, on
   old-identity verification accuracy, the changed people's identification within τ and rank-1
   on photos the candidate never trained on, and strangers' rejection; a figure that falls by more
   than its tolerance (enroll.yaml) rejects the candidate. The figures are stored with the job
   (``Job.result["gate"]``) and logged to the run's MLflow run.
3. If it passes: calibrate τ at the home's FAR (``far_target``, written by ``enroll init``), embed the whole gallery with the new model and switch PRODUCTION
   atomically (``models.register_run``: identify never mixes two versions), export a new
   TF-Serving version, and move the MLflow Model Registry alias ``champion`` to it.
The job row moves ``submitted -> running -> succeeded | rejected | failed``; a failed or rejected
job leaves the production model and the gallery untouched.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import enroll  # noqa: F401  (tf-keras before TensorFlow)
from enroll import home as layout
from trainer import run_results
from trainer.run_plan import RunPlan


def register_champion(plan: RunPlan, production_version: int) -> str:
    """Point the MLflow Model Registry alias ``champion`` at the promoted run's exported model."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(plan.tracking_uri)
    try:
        client.create_registered_model("facenet", description="FaceNet embedding model serving enrolment")
    except MlflowException:
        pass  # already registered
    run = client.get_run(plan.mlflow_run_id)
    version = client.create_model_version("facenet", f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                          tags={"production_version": str(production_version)})
    client.set_registered_model_alias("facenet", "champion", version.version)
    return version.version


def promote(home: Path, plan: RunPlan, far_target: float, gallery, gallery_version: int) -> dict:
    """Make the run production, then serve it, then name it champion.

    Each step is atomic on its own (a model version appears whole, PRODUCTION is renamed into
    place once every face has its vector, a TF-Serving version is renamed into place whole), so an
    interruption anywhere leaves the production model and the served version each consistent, the
    served one at most one promotion behind: ``enroll export-serving`` catches it up
    (tests/test_retrain_faults.py kills it in each of its steps).
    """
    from enroll.model_versions import register_run
    from enroll.serving_export import export_home

    version = register_run(plan.run_dir, home, far_target, gallery, gallery_version)
    served = export_home(home)
    return {"production_version": version, "serving_version": served.name,
            "registry_version": register_champion(plan, version) if plan.mlflow_run_id else None}


def run_retrain(home: Path, job_id: int) -> dict:
    from trainer import config as config_lib, train
    from trainer.checkpoints import load_run
    from trainer.warm_start import stop_at, warm_start_config

    from enroll.gate import describe, log_to_mlflow, promotion_gate
    from enroll.model_versions import production
    from enroll.retrain import export_people
    from enroll.settings import load_settings
    from enroll.backends import open_gallery

    gallery = open_gallery(home, create=True)
    gallery.update_job(job_id, "running", "warm-start training")
    try:
        settings = load_settings(home)
        version, meta, production_model = production(home)
        source = RunPlan.load(meta["source_run"])
        changed = sorted({c.name for c in gallery.changes_since(meta.get("gallery_version", 0))
                          if c.name and gallery.get(c.name) is not None})
        people = layout.retrain_people_dir(home, job_id)
        gallery_version, _ = export_people(gallery, people)

        target = _last_val_accuracy(Path(meta["source_run"]))
        # No warm-up: a warm start begins at a minimum the base run found (trainer/warm_start.py).
        cfg = warm_start_config(config_lib.from_dict(source.config), epochs=settings.retrain_epochs,
                                steps_per_epoch=settings.retrain_steps_per_epoch,
                                learning_rate_scale=settings.retrain_learning_rate_scale, warmup_epochs=0,
                                stop_when=stop_at({"val_accuracy": target}, settings.promotion_max_drop) if target else "",
                                run_name=f"retrain-job{job_id}-from-v{version}", out_dir=str(layout.runs_dir(home)))
        cfg.data.extra_source = str(people)
        cfg.eval.benchmarks = []  # the base run's figures; a retraining is judged by the gate
        keep_or_drop_teacher(cfg)
        plan = train.plan_run(cfg, None, split=source.split)
        plan.init_from, plan.gallery_version = meta["source_checkpoint"], gallery_version  # saved by open_tracking
        results = train.run_tracked(plan, cfg)

        candidate, _, _ = load_run(plan.run_dir)
        gate = promotion_gate(production_model, meta, candidate, plan, cfg, settings, gallery, changed)
        log_to_mlflow(plan, gate)
        summary = {"run_dir": plan.run_dir, "compute": results["compute"], "gate": gate}
        if not gate["passed"]:
            gallery.update_job(job_id, "rejected", "; ".join(gate["reasons"]), result={"gate": gate})
            return summary
        gallery.update_job(job_id, "running", "gate passed; promoting", result={"gate": gate})
        summary.update(promote(home, plan, settings.far_target, gallery, gallery_version))
        new_version = summary["production_version"]
        gallery.update_job(job_id, "succeeded", f"model {new_version} promoted (was {version}); "
                           f"{describe(gate)[1]}; {results['compute']['steps']} steps",
                           result={"gate": gate, "production_version": new_version})
        return summary
    except (KeyboardInterrupt, SystemExit):  # `ray job stop` / `enroll retrain --cancel` (SIGTERM)
        from enroll.retrain import stopped_state

        gallery.update_job(job_id, *stopped_state(home, job_id))
        raise
    except BaseException as exc:
        gallery.update_job(job_id, "failed", (str(exc).splitlines() or [type(exc).__name__])[0][:300])
        raise
    finally:
        forget_removed_meanwhile(home, gallery, layout.retrain_people_dir(home, job_id))
        gallery.close()


def keep_or_drop_teacher(cfg) -> None:
    """A distilled production model keeps its distillation term while the teacher is installed;
    without the [teacher] extra the warm start trains on the metric loss alone, and says so."""
    if not cfg.train.teacher:
        return
    from trainer.teacher import TeacherMissing, check_teacher

    try:
        check_teacher(cfg.train.teacher)
    except TeacherMissing as exc:
        print(f"warning: {exc}; this warm start trains without distillation", flush=True)
        cfg.train.teacher, cfg.train.distill_weight, cfg.train.distill_relational_weight = "", 0.0, 0.0
        cfg.train.metric_weight = cfg.train.metric_weight or 1.0
        cfg.data.sources = [s for s in cfg.data.sources if s.labeled]


def forget_removed_meanwhile(home: Path, gallery, exported: Path) -> None:
    """People removed while this job trained on their export: remove-person cleaned up before the
    job's copies existed, so do it again now."""
    from enroll.forget import forget

    for folder in sorted(exported.iterdir()) if exported.is_dir() else []:
        try:
            if gallery.get(folder.name) is None:
                forget(home, folder.name)
        except Exception as exc:  # noqa: BLE001 - in a finally: never hide the job's own outcome
            print(f"warning: could not delete the copies of a removed person: {exc}", file=sys.stderr)


def _last_val_accuracy(run_dir: Path) -> float:
    results = run_results.load(run_dir)
    return float(results.get("last_epoch", {}).get("val_accuracy", 0.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Warm-start retraining job (submitted by `enroll retrain`).")
    parser.add_argument("--home", required=True)
    parser.add_argument("--job", type=int, required=True)
    args = parser.parse_args(argv)
    summary = run_retrain(Path(args.home).resolve(), args.job)
    print(json.dumps(summary, indent=1, default=str))
    return 0 if summary["gate"]["passed"] else 3


if __name__ == "__main__":
    sys.exit(main())
