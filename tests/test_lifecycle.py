"""The README's main command, ``experiments/lifecycle.py``, run as a user runs it (small config).

Tiny model on synthetic faces instead of nn4_small2 on CelebA, LFW people enrolled one-shot, the
retraining job submitted to a `ray start` head of the test's own, with a gate the tiny model can
pass: every stage must run, in order, and the summary must hold numbers for each of them.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serving import versions
from tests.test_retrain import ray_head  # noqa: F401  (module fixture reused)
from tests.test_train import smoke_config

REPO = Path(__file__).resolve().parents[1]
STAGES = ["1-3. prepare", "4. production model", "5. enrol 7 people one-shot", "6. identify",
          "7-8. warm-start retraining", "9. identify again", "10. for comparison", "summary"]


def lifecycle(*argv, timeout=900):
    return subprocess.run([sys.executable, "experiments/lifecycle.py", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def lifecycle_run(synthetic_root, shared_data, tmp_path_factory, ray_head):  # noqa: F811
    tmp = tmp_path_factory.mktemp("lifecycle")
    config = tmp / "lifecycle.yaml"
    config.write_text(yaml.safe_dump(smoke_config(synthetic_root, tmp, epochs=2, steps_per_epoch=4,
                                                  run_name="lifecycle-test").to_dict()))
    home = tmp / "home"
    done = lifecycle("--config", str(config), "--people", str(shared_data / "lfw_mini"), "--home", str(home),
                     "--ray-address", ray_head, "--enroll", "promotion_max_drop=1.0",
                     "--enroll", "promotion_min_new_rank1=0.0", "--enroll", "retrain_epochs=1",
                     "--enroll", "retrain_steps_per_epoch=3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, home, f"sqlite:///{tmp / 'mlflow.db'}"


def test_the_whole_lifecycle_in_one_command(lifecycle_run):
    done, home, _ = lifecycle_run
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
    from tests import test_mlflow_ui as ui  # skips here when Chromium or selenium is absent

    done, home, uri = lifecycle_run
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
