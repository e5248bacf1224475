"""The README's main command, ``experiments/lifecycle.py``, run as a user runs it (small config).

Tiny model on synthetic faces instead of nn4_small2 on CelebA, LFW people enrolled one-shot, the
retraining job submitted to a `ray start` head of the test's own, with a gate the tiny model can
pass: every stage must run, in order, and the summary must hold numbers for each of them.
"""
import json
import subprocess
import sys
from pathlib import Path

import yaml

from serving import versions
from tests.test_retrain import ray_head  # noqa: F401  (module fixture reused)
from tests.test_train import smoke_config

REPO = Path(__file__).resolve().parents[1]
STAGES = ["1-3. prepare", "4. production model", "5. enrol 7 people one-shot", "6. identify",
          "7-8. warm-start retraining", "9. identify again", "summary"]


def lifecycle(*argv, timeout=900):
    return subprocess.run([sys.executable, "experiments/lifecycle.py", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_the_whole_lifecycle_in_one_command(synthetic_root, shared_data, tmp_path, ray_head):  # noqa: F811
    config = tmp_path / "lifecycle.yaml"
    config.write_text(yaml.safe_dump(smoke_config(synthetic_root, tmp_path, epochs=2, steps_per_epoch=4,
                                                  run_name="lifecycle-test").to_dict()))
    home = tmp_path / "home"
    done = lifecycle("--config", str(config), "--people", str(shared_data / "lfw_mini"), "--home", str(home),
                     "--ray-address", ray_head, "--enroll", "promotion_max_drop=1.0",
                     "--enroll", "promotion_min_new_rank1=0.0", "--enroll", "retrain_epochs=1",
                     "--enroll", "retrain_steps_per_epoch=3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    positions = [done.stdout.find(f"=== {stage}") for stage in STAGES]
    assert -1 not in positions and positions == sorted(positions), positions

    summary = json.loads((home / "lifecycle.json").read_text())
    assert summary["retrain_job"]["state"] == "succeeded", summary["retrain_job"]
    for when in ("before", "after"):  # 10 LFW people: 3 strangers (all photos), 7 enrolled from their first
        assert summary[when]["known_probes"] > 20 and summary[when]["stranger_probes"] > 10, summary[when]
        assert summary[when]["identify_p50_ms"] > 0
    assert summary["N"]["steps"] == 8 and 0 < summary["N_adpt"]["steps"] <= 3  # N_adpt: the warm start
    assert summary["test"]["accuracy"] > 0
    assert (home / "PRODUCTION").read_text().strip() == "2"
    assert len(versions.list_versions(home / "serving", "facenet")) == 2  # the base model, then the promoted one
    assert "| known_identified |" in done.stdout and "mlflow ui --backend-store-uri" in done.stdout


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
