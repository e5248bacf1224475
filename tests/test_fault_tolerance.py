"""A 2-worker Ray training run survives a killed worker, and MLflow holds the complete record.

The run (tiny model, synthetic identities, 4 epochs of 25 steps) is started as a user would,
``python -m trainer.train --config ...``, on its own local Ray. Once the checkpoint of epoch 2
exists, one Ray Train worker process is SIGKILLed. Ray's FailureConfig restarts the worker group,
which restores the last reported checkpoint; the run must finish with exactly 4 epochs' worth of
steps (none lost, none double-counted) and log its final test metrics once.
"""
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

EPOCHS, STEPS = 4, 25


def ray_train_workers(mark: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "RayTrainWorker" in " ".join(proc.info["cmdline"] or []) and proc.environ().get("FACENET_TEST_MARK") == mark:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="module")
def faulty_run(synthetic_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faulty")
    config = {
        "data": {"source": str(synthetic_root), "align": False, "cache_dir": str(tmp / "cache"),
                 "val_fraction": 0.25, "test_fraction": 0.25},
        "model": {"name": "tiny", "input_size": 32},
        "train": {"epochs": EPOCHS, "steps_per_epoch": STEPS, "identities_per_batch": 4, "images_per_identity": 3,
                  "optimizer": "adam", "learning_rate": 0.003, "out_dir": str(tmp / "runs"), "run_name": "faulty"},
        "eval": {"folds": 2, "pairs_per_fold": 10},
        "ray": {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 2},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "fault-test"},
    }
    (tmp / "faulty.yaml").write_text(yaml.safe_dump(config))
    mark = uuid.uuid4().hex
    env = {**os.environ, "FACENET_TEST_MARK": mark, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    log = open(tmp / "train.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "trainer.train", "--config", str(tmp / "faulty.yaml")],
                            cwd=Path(__file__).resolve().parents[1], env=env, stdout=log, stderr=subprocess.STDOUT)
    run_dir = tmp / "runs" / "faulty"
    killed = None
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if killed is None and (run_dir / "checkpoints" / "epoch-0001" / "state.json").exists():
            workers = ray_train_workers(mark)
            if workers:
                killed = workers[-1].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    log.close()
    return {"rc": proc.returncode, "killed": killed, "run_dir": run_dir, "log": (tmp / "train.log").read_text(),
            "tracking_uri": config["mlflow"]["tracking_uri"]}


def test_killed_worker_run_completes_from_its_last_checkpoint(faulty_run):
    from trainer import run_results

    assert faulty_run["killed"], "no Ray Train worker was found to kill"
    assert faulty_run["rc"] == 0, faulty_run["log"][-3000:]
    resumed = [int(n) for n in re.findall(r"resuming after epoch (\d+)", faulty_run["log"])]
    # The kill lands after epoch 2 is written; Ray resumes from the last *reported* checkpoint (epoch 1 or 2).
    assert resumed and min(resumed) >= 1, "the restarted workers must continue from a checkpoint, not epoch 0"
    results = run_results.load(faulty_run["run_dir"])
    assert results["last_epoch"]["epoch"] == EPOCHS - 1
    assert results["compute"]["steps"] == EPOCHS * STEPS
    assert results["compute"]["images"] == EPOCHS * STEPS * 12
    assert faulty_run["log"].count("test: accuracy=") == 1


def test_mlflow_store_holds_params_metrics_compute_and_artifacts(faulty_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(faulty_run["tracking_uri"])
    experiment = client.get_experiment_by_name("fault-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["train.epochs"] == str(EPOCHS) and params["model.name"] == "tiny"
    assert params["ray.num_workers"] == "2"
    assert len(tags["git_commit"]) >= 7 and len(tags["data_fingerprint"]) == 16
    for name in ("loss", "active_triplet_fraction", "val_accuracy", "val_val", "val_auc", "input_wait_fraction",
                 "test_accuracy", "test_val", "test_auc"):
        assert name in metrics, name
    assert metrics["compute/total_steps"] == EPOCHS * STEPS
    assert metrics["compute/total_images"] == EPOCHS * STEPS * 12
    assert metrics["compute/total_train_flops"] > 0 and metrics["compute/total_worker_seconds"] > 0
    assert metrics["compute/total_gpu_seconds"] == 0
    assert len(client.get_metric_history(run.info.run_id, "test_accuracy")) == 1
    epochs_logged = {m.step for m in client.get_metric_history(run.info.run_id, "loss")}
    assert epochs_logged == set(range(EPOCHS))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "results.json", "eval-test", "model", "checkpoint", "split.json"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "eval-test")}
    assert {"eval-test/roc.png", "eval-test/distances.png"} <= plots
