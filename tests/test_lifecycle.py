"""The README's main command, ``python -m experiments.lifecycle``, run as a user runs it (small config).

Tiny model on synthetic faces instead of nn4_small2 on CelebA, LFW people enrolled one-shot, the
retraining job submitted, as by default, to a local Ray head the command starts (and must stop),
with a gate the tiny model can pass: every stage must run, in order, and the summary must hold
numbers for each of them; the terminal must show stages, progress and results, not Ray's and
TensorFlow's log lines, which go to the full log file; nothing the command started may outlive it.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

import pytest
import yaml

from serving import versions
from tests.test_retrain import ray_head  # noqa: F401  (module fixture reused)
from tests.test_train import smoke_config

REPO = Path(__file__).resolve().parents[1]
STAGES = ["1-3. prepare", "4. production model", "5. enrol 7 people one-shot", "6. identify",
          "7-8. warm-start retraining", "9. identify again", "10. for comparison", "summary"]


MARK = "FACENET_LIFECYCLE_TEST_MARK"  # inherited by every process the command starts, Ray's included


def lifecycle(*argv, timeout=900, mark=""):
    return subprocess.run([sys.executable, "-m", "experiments.lifecycle", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, MARK: mark})


def marked_processes(mark: str) -> list:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get(MARK) == mark:
                found.append(proc)
        except psutil.Error:  # gone meanwhile, or another user's
            continue
    return found


@pytest.fixture(scope="module")
def lifecycle_run(synthetic_root, shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lifecycle")
    config = tmp / "lifecycle.yaml"
    config.write_text(yaml.safe_dump(smoke_config(synthetic_root, tmp, epochs=2, steps_per_epoch=4,
                                                  run_name="lifecycle-test").to_dict()))
    home, mark = tmp / "home", uuid.uuid4().hex
    done = lifecycle("--config", str(config), "--people", str(shared_data / "lfw_mini"), "--home", str(home),
                     "--enroll", "promotion_max_drop=1.0", "--enroll", "promotion_max_identified_drop=1.0",
                     "--enroll", "promotion_max_rank1_drop=1.0", "--enroll", "promotion_max_stranger_drop=1.0",
                     "--enroll", "promotion_max_oneshot_identified_drop=1.0",
                     "--enroll", "promotion_max_oneshot_rank1_drop=1.0", "--enroll", "promotion_evidence_p=1.0",
                     "--enroll", "promotion_min_new_rank1=0.0", "--enroll", "retrain_epochs=1",
                     "--enroll", "retrain_steps_per_epoch=3", mark=mark)
    (tmp / "console.txt").write_text(done.stdout + "\n---- stderr ----\n" + done.stderr)  # to read after a failure
    deadline, left = time.time() + 60, marked_processes(mark)
    while left and time.time() < deadline:  # Ray's processes may take a moment to exit
        time.sleep(2)
        left = marked_processes(mark)
    for proc in left:  # not to burden the tests after this one; the test below fails on them
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, home, f"sqlite:///{tmp / 'mlflow.db'}", [(p.pid, p.info["cmdline"]) for p in left]


def test_the_whole_lifecycle_in_one_command(lifecycle_run):
    done, home, *_ = lifecycle_run
    positions = [done.stdout.find(f"=== {stage}") for stage in STAGES]
    assert -1 not in positions and positions == sorted(positions), positions

    summary = json.loads((home / "lifecycle.json").read_text())
    assert summary["retrain_job"]["state"] == "succeeded", summary["retrain_job"]
    for when in ("before", "after"):  # 10 LFW people: 3 strangers (all photos), 7 enrolled from their first
        assert summary[when]["known_probes"] > 20 and summary[when]["stranger_probes"] > 10, summary[when]
        assert summary[when]["identify_p50_ms"] > 0
    # N_adpt (warm start) stops early; N_prim retrains from scratch with N's budget on more people.
    assert summary["N"]["steps"] == summary["N_prim"]["steps"] == 8 and 0 < summary["N_adpt"]["steps"] <= 3
    assert summary["N_prim"]["images"] == summary["N"]["images"]
    assert all(summary["test_accuracy"][label] > 0 for label in ("N", "N_prim", "N_adpt"))
    assert (home / "PRODUCTION").read_text().strip() == "2"
    assert len(versions.list_versions(home / "serving", "facenet")) == 2  # the base model, then the promoted one
    assert "| known_identified |" in done.stdout and "| N_prim (full retraining) | 8 |" in done.stdout
    assert "mlflow ui --backend-store-uri" in done.stdout


def test_a_quiet_console_a_full_log_and_nothing_left_running(lifecycle_run):
    done, home, _, left = lifecycle_run
    console = done.stdout + done.stderr
    for noise in ("PlacementGroupCleaner", "cuInit", "oneDNN", "absl::InitializeLog", "Started a local Ray"):
        assert noise not in console, [line for line in console.splitlines() if noise in line][:5]
    assert "epoch 2/2:" in console and "100%|" in done.stderr, "progress bars and epoch lines stay visible"
    logs = re.findall(r"^full log: (.+)$", done.stdout, re.M)
    assert len(logs) == 2 and logs[0] == logs[-1] == str(home / "lifecycle.log"), "printed first and in the summary"
    log = Path(logs[0]).read_text()
    assert "=== summary ===" in log and "| known_identified |" in log, "the log holds the console too"
    assert re.search(r"^\(\w+ pid=\d+\) ", log, re.M), "the Ray workers' output is in the log"
    # TensorFlow's C++ start-up lines (glog format; which ones depends on the machine: "oneDNN custom
    # operations are on" only where TensorFlow turns oneDNN on by default: AVX-512 VNNI/BF16 or AMX CPUs)
    # are kept, in the log.
    assert re.search(r"^(\(\w+ pid=\d+\) )?[IWE]\d{4} [\d:.]+\s+\d+ \w+\.cc:\d+\] ", log, re.M), \
        "TensorFlow's start-up lines are kept, in the log"
    assert "---- log of Ray job facenet-retrain-1-" in log, "the retraining job's log is appended"
    # What the command started, it stopped: the in-process Ray and the head it ran the job on.
    assert "ray stop" not in console and "stopped the local Ray head" in done.stdout
    assert not left, f"processes the command started outlived it: {left}"


def test_the_console_filter_keeps_progress_and_results_and_drops_log_records():
    from trainer.console import is_noise

    noise = [
        "(PlacementGroupCleaner pid=4242) 2026-01-01 10:00:00,123\tWARNING placement_group_cleaner.py:86 -- "
        "Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.",
        "\x1b[36m(TrainController pid=77)\x1b[0m Attempting to start training worker group of size 2",
        "(RayTrainWorker pid=80) WARNING: All log messages before absl::InitializeLog() is called are written to",
        "(RayTrainWorker pid=80) I0000 00:00:1795982090.867457    6453 port.cc:153] oneDNN custom operations are on.",
        "(align_identity pid=81) E0000 00:00:1795982097.189150    6453 cuda_platform.cc:52] failed call to cuInit",
        "I0000 00:00:1795982090.867457    6453 cudart_stub.cc:31] Could not find cuda drivers on your machine",
        "2026-01-01 10:00:00.000001: I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow binary",
        "2026-01-01 10:00:00,123\tINFO worker.py:2007 -- Started a local Ray instance.",
        "WARNING:absl:You are saving your model as an HDF5 file via `model.save()`.",
        "W1129 19:55:00.123456 140 saving_utils.py:12] Compiled the loaded model, but the compiled metrics have",
        "INFO  [alembic.runtime.migration] Context impl SQLiteImpl.",
        "2026/01/01 10:00:00 INFO mlflow.store.db.utils: Creating initial MLflow database tables...",
        "/venv/lib/python3.11/site-packages/keras/src/x.py:12: UserWarning: Do not pass an `input_shape`",
    ]
    kept = [
        "=== 1-3. prepare (detect + align), train on Ray, evaluate ===",
        "(RayTrainWorker pid=80) epoch 1/2: loss=0.2, active_triplet_fraction=0.5, val_accuracy=0.7",
        "(RayTrainWorker pid=80) 4/4 [==============================] - 3s 700ms/step - loss: 0.2 - active: 0.5",
        "\raligning identities:  50%|█████     | 6/12 [00:03<00:03,  1.9id/s]",
        "| known_identified | 0.063 | 0.032 |",
        "Traceback (most recent call last):",
        "(raylet) A worker died or was killed while executing a task by an unexpected system error.",
        "2026-01-01 10:00:00,123\tERROR worker.py:400 -- Unhandled error (suppress with RAY_IGNORE_UNHANDLED_ERRORS=1)",
        "error: dataset path not found: /nowhere (data.source)",
    ]
    assert [line for line in noise if not is_noise(line)] == []
    assert [line for line in kept if is_noise(line)] == []
    # A worker's stderr is its log (Ray Train prints a worker's log records without level or name).
    worker_logs = ["(RayTrainWorker pid=80) Checkpoint successfully created at: Checkpoint(filesystem=local, ...)",
                   "(RayTrainWorker pid=80) From /venv/.../flops_registry.py:140: tensor_shape_from_node_def_name",
                   "(RayTrainWorker pid=80) Compiled the loaded model, but the compiled metrics have yet to be built."]
    assert all(is_noise(line, stderr=True) for line in worker_logs)
    assert not any(is_noise(line, stderr=True) for line in [
        "(raylet) A worker died or was killed while executing a task by an unexpected system error.",
        "\raligning identities: 100%|██████████| 12/12 [00:18<00:00,  1.55s/id]",
        "Traceback (most recent call last):"])


def test_a_local_heads_ports_are_all_distinct():
    """Each Ray component of a local head gets its own port; a port probed and closed could be handed
    out again at once, and two components on one port stop ``ray start`` (seen in the suite)."""
    from trainer.ray_setup import _free_ports

    for _ in range(20):
        ports = _free_ports(7)
        assert len(set(ports)) == 7 and all(1024 <= p < 65536 for p in ports)


def test_a_ray_head_given_is_used_and_left_running(ray_head):  # noqa: F811
    from ray.job_submission import JobSubmissionClient

    from enroll.retrain import _auth_headers
    from trainer import ray_setup

    with ray_setup.local_head(ray_head) as address:
        assert address == ray_head
    JobSubmissionClient(ray_head, headers=_auth_headers()).list_jobs()  # still answers


def warm_vs_full_runs(uri: str) -> list:
    """N, N_prim, N_adpt as the lifecycle grouped them in MLflow (children of one parent run)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    (parent,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   filter_string="attributes.run_name LIKE 'warm_vs_full-%'")
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {run.info.run_name: run for run in children}
    return [by_name["lifecycle-test"], by_name["lifecycle-test-N_prim"],
            next(run for name, run in by_name.items() if name.startswith("retrain-job1-"))]


def test_mlflow_groups_n_n_prim_and_n_adpt(lifecycle_run):
    runs = warm_vs_full_runs(lifecycle_run[2])
    steps = [run.data.metrics["compute/total_steps"] for run in runs]
    assert steps[0] == steps[1] == 8 and 0 < steps[2] <= 3, steps
    assert all(run.data.metrics["compute/total_train_flops"] > 0 for run in runs)


def test_the_mlflow_ui_compares_the_main_jobs_three_runs(lifecycle_run, tmp_path):
    """The browser test on the store the main job wrote (tests/test_mlflow_ui.py has the machinery)."""
    from tests import test_mlflow_ui as ui  # skips here when selenium is absent

    if not (ui.CHROMIUM.exists() and ui.CHROMEDRIVER.exists()):  # that module's skip mark is not ours
        pytest.skip(f"{ui.CHROMIUM} / {ui.CHROMEDRIVER} absent: run .ci/install-browser.sh")
    done, home, uri, _ = lifecycle_run
    with ui.serve_ui(uri, tmp_path) as base, ui.headless_chromium(tmp_path / "profile") as browser:
        ui.assert_compare_page(browser, base, warm_vs_full_runs(uri), "mlflow-ui-lifecycle-compare.png")


def test_no_data_is_one_clear_error(tmp_path, shared_data):
    done = lifecycle("--config", "experiments/smoke.yaml", "--set", f"data.source={tmp_path / 'no-such-folder'}",
                     "--people", str(shared_data / "lfw_mini"), "--home", str(tmp_path / "home"), timeout=300)
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert err[-1].startswith("error: dataset path not found") and "data.source" in err[-1], err
    done = lifecycle("--config", "experiments/smoke.yaml", "--enroll", "retrain_after=3",
                     "--people", str(shared_data / "lfw_mini"), "--home", str(tmp_path / "home2"), timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error:") and \
        "retrain_after" in done.stderr, done.stderr[-2000:]


def test_a_finished_run_can_be_the_base_instead_of_training_one(lifecycle_run, tmp_path, shared_data):
    from experiments.lifecycle import base_model

    done, home, *_ = lifecycle_run
    run_dir = Path(json.loads((home / "lifecycle.json").read_text())["run"])
    plan, results = base_model(argparse.Namespace(base_run=run_dir), None)
    assert plan.run_dir == str(run_dir) and results["test"]["accuracy"] > 0
    missing = lifecycle("--base-run", str(tmp_path / "no-such-run"), "--people", str(shared_data / "lfw_mini"),
                        "--home", str(tmp_path / "home"), timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr[-2000:]
    assert missing.stderr.strip().splitlines()[-1].startswith("error:") and "no-such-run" in missing.stderr


def test_the_default_base_is_dlibs_descriptor_when_the_teacher_is_installed(capsys):
    from experiments.lifecycle import DLIB_BASE, default_config
    from trainer import config as config_lib

    assert default_config() == DLIB_BASE  # the [teacher] extra is installed with the test extras
    said = capsys.readouterr().out
    assert "dlib's ResNet descriptor" in said and "distill_dlib.yaml" in said, said
    cfg = config_lib.load(DLIB_BASE, [])
    assert (cfg.model.name, cfg.model.face_template, cfg.train.epochs) == ("dlib_resnet", "dlib", 0)
