"""The whole lifecycle on the embedded defaults, stage by stage, ending in a summary table.

    python -m experiments.lifecycle --people ../shared/data/lfw_mini    # --config: see default_config()

prepare (detect + align) -> train on Ray -> evaluate -> export for TF-Serving -> enrol people
one-shot (one photo each, from ``--people``, an identity folder of people *not* in the training
data) -> identify their other photos and photos of people never enrolled (who must come out
unknown) -> warm-start retraining triggered by the enrolments (a Ray job) -> promotion ->
identify again -> for comparison, a full retraining from scratch on the same changed data
(N_prim; ``--skip-full-retrain`` saves that time; skipped when the base was not trained here,
0 epochs) -> summary (accuracy before/after, N vs N_prim vs
N_adpt, latencies) and where to look in MLflow, where the three runs are grouped under one parent. Local Ray, a sqlite MLflow store and in-process serving; nothing else to start,
and nothing left running: the local Ray head the retraining job runs on is started for it and
stopped when it ends (``--ray-address`` submits to your cluster instead, and leaves it alone).

The terminal shows stage headers, progress bars and results; everything else (Ray's and
TensorFlow's log lines, every Ray worker's output, the retraining job's log) goes to
``<home>/lifecycle.log``, whose path is printed first and in the summary (see trainer/console.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from enroll.home import runs_dir, settings_file
from experiments.lifecycle_probes import identify_all, photos_of, probes_of
from trainer import config as config_lib, console, ray_setup, run_results, train
from trainer.run_plan import RunPlan


def stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def full_retraining(cfg, retrain_plan: RunPlan, base_plan: RunPlan) -> dict:
    """N_prim: the warm start's data (base identities + the enrolled people), trained from scratch
    with the base run's budget; grouped with N and N_adpt under one MLflow parent run, as
    experiments/warm_vs_full.py does, so the UI compares the three."""
    from trainer import tracking

    prim_cfg = config_lib.from_dict(retrain_plan.config)
    prim_cfg.train.epochs, prim_cfg.train.steps_per_epoch = cfg.train.epochs, cfg.train.steps_per_epoch
    prim_cfg.train.stop_when = ""  # out_dir stays the home's runs/: remove-person finds its plan there
    prim_cfg.train.run_name = f"{base_plan.run_name}-N_prim"
    parent = tracking.parent_run(base_plan.tracking_uri, cfg.mlflow.experiment,
                                 f"warm_vs_full-{base_plan.run_name}")
    prim_plan = train.plan_run(prim_cfg, None, split=retrain_plan.split)
    prim_plan.parent_run_id = parent
    results = train.run_tracked(prim_plan, prim_cfg)
    tracking.adopt(base_plan.tracking_uri, parent, (base_plan.mlflow_run_id, retrain_plan.mlflow_run_id))
    return results


def save_job_log(log: console.Capture, address: str, submission: str) -> None:
    """Append the retraining job's driver log (it ran on the Ray head, not here) to the full log."""
    if not address.startswith("http"):
        return
    try:
        from ray.job_submission import JobSubmissionClient

        from enroll.retrain import _auth_headers

        text = JobSubmissionClient(address, headers=_auth_headers()).get_job_logs(submission)
    except Exception as exc:  # noqa: BLE001 - the log is a convenience; the job's result is recorded
        text = f"(not available: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]})"
    log.log_only(f"\n---- log of Ray job {submission} (warm-start retraining) ----\n{text}\n"
                 f"---- end of the log of Ray job {submission} ----")


DLIB_BASE, DISTILLED, FROM_SCRATCH = ("experiments/dlib_resnet.yaml", "experiments/distill_dlib.yaml",
                                      "experiments/celeba_nn4.yaml")


def default_config() -> str:
    """The best base model a user can have here: dlib's ResNet descriptor as a Keras network when the
    [teacher] extra is installed (README, *The teacher as the base*), else the from-scratch recipe;
    says which."""
    from trainer.teacher import TeacherMissing, check_teacher

    try:
        check_teacher("dlib_resnet_v1")
    except TeacherMissing:
        print(f"base recipe: from scratch ({FROM_SCRATCH}); pip install -e '.[teacher]' for dlib's descriptor "
              "as the base", flush=True)
        return FROM_SCRATCH
    print(f"base recipe: dlib's ResNet descriptor as a Keras network ({DLIB_BASE}); "
          f"--config {DISTILLED} trains a FaceNet nn4.small2 taught by it instead", flush=True)
    return DLIB_BASE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="training config (default: experiments/dlib_resnet.yaml when the "
                                          "[teacher] extra is installed, else experiments/celeba_nn4.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--people", type=Path, default=Path("../shared/data/lfw_mini"),
                        help="identity folder of people to enrol (one photo each) and of strangers")
    parser.add_argument("--strangers", type=int, default=3, help="people of --people never enrolled")
    parser.add_argument("--far-target", type=float, default=0.01, help="FAR at which τ is calibrated")
    parser.add_argument("--home", type=Path, help="FACENET_HOME to create (default: a fresh one under .facenet/)")
    parser.add_argument("--ray-address", default="",
                        help="Ray dashboard URL the retraining job is submitted to, left running "
                             "(default: a local head started for the job and stopped after it)")
    parser.add_argument("--base-run", type=Path, metavar="RUN_DIR",
                        help="a finished training run (python -m trainer.train) to use as the base model "
                             "instead of training one (stages 1-3); --config is then the run's own")
    parser.add_argument("--skip-full-retrain", action="store_true",
                        help="skip the comparison with a full retraining from scratch (N_prim), a second base training")
    parser.add_argument("--identify-home", type=Path, metavar="HOME",
                        help="only identify the probes again against an existing lifecycle home (e.g. after "
                             "`enroll retrain` promoted a new model there), print the figures and exit")
    parser.add_argument("--enroll", action="append", default=[], metavar="KEY=VALUE",
                        help="an enroll.yaml setting for the home, e.g. promotion_max_drop=0.02 (repeatable)")
    args = parser.parse_args(argv)

    from enroll.gallery import GalleryError
    from enroll.settings import load_settings
    from trainer.prepare import DatasetError

    try:
        people_root = Path(config_lib.resolve_path(str(args.people)))
        if not people_root.is_dir():
            raise DatasetError(f"--people {people_root} not found: give a folder of <person>/<photo>.jpg to enrol")
        people = sorted(p for p in people_root.iterdir() if p.is_dir())
        if len(people) <= args.strangers:
            raise DatasetError(f"--people needs more than {args.strangers} people (the strangers) to enrol anyone")
        if args.identify_home:
            print(json.dumps(identify_all(args.identify_home.resolve(), probes_of(people, args.strangers))))
            return 0
        if args.base_run:  # its own config: the plan holds it (no model is loaded to read it)
            args.config = str(args.base_run / "config.yaml")
            cfg = config_lib.from_dict(RunPlan.load(args.base_run).config)
        else:
            args.config = args.config or default_config()
            cfg = config_lib.load(args.config, args.set)
        if any("=" not in item for item in args.enroll):
            raise config_lib.ConfigError(f"--enroll takes KEY=VALUE, got {args.enroll}")
        policy = {**({"ray_address": args.ray_address} if args.ray_address else {}),
                  **dict(item.split("=", 1) for item in args.enroll)}
        home = (args.home or Path(".facenet") / f"lifecycle-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        home.mkdir(parents=True, exist_ok=True)
        # enroll.yaml is the home's policy; stage 4 (enroll init) records --far-target in it.
        settings_file(home).write_text(yaml.safe_dump({k: yaml.safe_load(str(v)) for k, v in policy.items()}))
        settings = load_settings(home)  # unknown or ill-typed settings are refused now, not after training
    except (config_lib.ConfigError, DatasetError, GalleryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    with console.capture(home / console.LOG_NAME) as log:
        print(f"full log: {log.path}", flush=True)
        try:
            return lifecycle(args, cfg, home, people, settings.ray_address or os.environ.get("RAY_ADDRESS", ""), log)
        except KeyboardInterrupt:
            print(f"\ninterrupted; full log: {log.path}", file=sys.stderr)
            return 130
        except Exception:
            print(f"failed; full log: {log.path}", file=sys.stderr)
            raise
        finally:
            ray_setup.shutdown_ray()  # the in-process local Ray (data preparation, training) ends here


def lifecycle(args, cfg, home: Path, people: list[Path], ray_address: str, log: console.Capture) -> int:
    """Stages 1-10 and the summary; ``ray_address`` is the cluster the user gave for jobs, if any."""
    from enroll.gallery import GalleryError
    from trainer.prepare import DatasetError

    try:
        plan, results = base_model(args, cfg)
    except (config_lib.ConfigError, DatasetError, GalleryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    publish_production(plan, home, args.far_target)
    enrol_one_shot(home, people[args.strangers:])
    probes = probes_of(people, args.strangers)

    stage("6. identify enrolled people and strangers")
    before = identify_all(home, probes)
    print(json.dumps(before))
    finished = warm_start_retraining(home, ray_address, log)
    stage("9. identify again")
    after = identify_all(home, probes)
    print(json.dumps(after))

    retrained = sorted(d for d in runs_dir(home).glob("retrain-job*") if run_results.finished(d))
    retrain_results = run_results.load(retrained[0]) if retrained else {}
    prim_results = {}
    if retrained and not args.skip_full_retrain:
        if results["compute"]["steps"]:
            stage("10. for comparison: full retraining from scratch on the same changed data (N_prim)")
            prim_results = full_retraining(cfg, RunPlan.load(retrained[0]), plan)
        else:
            print("\n(no full retraining to compare with: the base model was not trained here, 0 steps)")
    summary = {"run": plan.run_dir, "home": str(home), "test": results.get("test", {}), "before": before,
               "after": after, "retrain_job": {"state": finished.state, "detail": finished.detail,
                                               "gate": finished.result.get("gate")},
               "N": results["compute"], "N_adpt": retrain_results.get("compute", {}),
               "N_prim": prim_results.get("compute", {}),
               "test_accuracy": {"N": results.get("test", {}).get("accuracy"),
                                 "N_adpt": retrain_results.get("test", {}).get("accuracy"),
                                 "N_prim": prim_results.get("test", {}).get("accuracy")}}
    (home / "lifecycle.json").write_text(json.dumps(summary, indent=1, default=str))
    print_summary(summary, plan, cfg, log)
    return 0 if finished.state in ("succeeded", "rejected") else 1  # a gate refusing a worse model is the system working


def base_model(args, cfg) -> tuple[RunPlan, dict]:
    """Stages 1-3: train the base run, or take the finished ``--base-run``; (its plan, its results)."""
    if args.base_run:
        stage(f"1-3. base model: the finished run {args.base_run}")
        return RunPlan.load(args.base_run), run_results.load(args.base_run)  # FileNotFoundError (an OSError) when it has not finished
    stage("1-3. prepare (detect + align), train on Ray, evaluate")
    cfg.train.run_name = cfg.train.run_name or f"lifecycle-{time.strftime('%Y%m%d-%H%M%S')}"
    plan = train.plan_run(cfg, args.config)
    return plan, train.run_tracked(plan, cfg)


def publish_production(plan: RunPlan, home: Path, far_target: float) -> None:
    """Stage 4: the base run becomes the home's production model (τ at ``far_target``), exported for TF-Serving."""
    from enroll import cli as enroll_cli
    from enroll.settings import init_production

    stage("4. production model and TF-Serving export")
    init_production(plan.run_dir, home, far_target)
    enroll_cli.main(["export-serving", "--home", str(home)])


def enrol_one_shot(home: Path, enrolled: list[Path]) -> None:
    """Stage 5: each person of ``enrolled`` from their first photo."""
    from enroll.service import add_person
    from enroll.backends import open_gallery

    stage(f"5. enrol {len(enrolled)} people one-shot")
    with open_gallery(home, create=True) as gallery:
        for folder in enrolled:
            started = time.perf_counter()
            report = add_person(gallery, home, folder.name, photos_of(folder)[:1], allow_several=True)
            print(f"  {folder.name}: {report['faces_added']} face in {1000 * (time.perf_counter() - started):.0f} ms")


def warm_start_retraining(home: Path, ray_address: str, log: console.Capture):
    """Stages 7-8: the retraining job the enrolments call for, on ``ray_address`` or a local Ray
    head started for it (and stopped after it); the finished job (enroll.gallery.Job)."""
    from enroll.retrain import submit_retrain, wait_for

    stage("7-8. warm-start retraining (a Ray job) and promotion")
    if not ray_address:
        print("starting a local Ray head for the retraining job (stopped when the job ends)", flush=True)
    with ray_setup.local_head(ray_address, log_file=log.path) as address:
        job, ray_job, message = submit_retrain(home, "lifecycle: people enrolled",
                                               address="" if ray_address else address)
        print(message, flush=True)
        finished = wait_for(home, job, timeout=3600)
        save_job_log(log, address, ray_job)
    if not ray_address:
        print("stopped the local Ray head", flush=True)
    print(f"job {finished.id}: {finished.state} ({finished.detail}); its log is in the full log")
    if finished.result.get("gate"):
        from enroll.gate import describe

        print("promotion gate, production -> candidate:\n  " + "\n  ".join(describe(finished.result["gate"])))
    return finished


def print_summary(summary: dict, plan: RunPlan, cfg, log: console.Capture) -> None:
    """The summary tables (identification before/after retraining; N vs N_prim vs N_adpt) and where to look."""
    before, after, full = summary["before"], summary["after"], summary["N"]
    stage("summary")
    print("| | before retraining | after retraining |\n| --- | ---: | ---: |")
    for key in ("known_identified", "known_rank1", "strangers_rejected", "identify_p50_ms"):
        print(f"| {key} | {before[key]:.3f} | {after[key]:.3f} |")
    print("\n| run | steps | train FLOPs | seconds | test accuracy | FLOPs vs N |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, compute in (("N (base training)", full), ("N_prim (full retraining)", summary["N_prim"]),
                           ("N_adpt (warm start)", summary["N_adpt"])):
        if compute:
            accuracy = summary["test_accuracy"][label.split()[0]]
            ratio = f"{compute['train_flops'] / full['train_flops']:.3f}" if full["train_flops"] else "–"  # 0-epoch base
            print(f"| {label} | {compute['steps']} | {compute['train_flops']:.3g} | {compute['wall_seconds']:.0f} | "
                  f"{'–' if accuracy is None else f'{accuracy:.3f}'} | {ratio} |")
    print(f"\nretraining job {summary['retrain_job']['state']}")
    print(f"test split: accuracy {summary['test'].get('accuracy', float('nan')):.3f}; "
          f"MLflow: mlflow ui --backend-store-uri {plan.tracking_uri}  (experiment '{cfg.mlflow.experiment}')")
    print(f"everything: {summary['home']} (summary in lifecycle.json)")
    print(f"full log: {log.path}")


if __name__ == "__main__":
    sys.exit(main())
