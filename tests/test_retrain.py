"""Warm-start retraining as a real Ray job (Job Submission SDK against a `ray start` head).

A production home (tiny model, four people enrolled one-shot from LFW photos) is retrained:
once with a gate it passes (promotion: a new production version, the whole gallery re-embedded,
a TF-Serving version, the MLflow alias ``champion``), once with a gate it cannot pass (rejected:
production model and gallery untouched).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from enroll import cli
from enroll.store import SqliteGallery
from tests.test_enroll_cli import home, lfw, trained_run  # noqa: F401  (module fixtures reused)

DASHBOARD_PORT = 8299


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head started like a user would, on its own ports; only its own processes are stopped."""
    ray = str(Path(sys.executable).with_name("ray"))
    sessions = set(Path("/tmp/ray").glob("session_2*"))
    subprocess.run([ray, "start", "--head", "--port", "6399", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(DASHBOARD_PORT), "--dashboard-agent-listen-port", "52399",
                    "--dashboard-agent-grpc-port", "52398", "--runtime-env-agent-port", "52397",
                    "--metrics-export-port", "52396", "--num-cpus", "2", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=180)
    (session,) = set(Path("/tmp/ray").glob("session_2*")) - sessions
    yield f"http://127.0.0.1:{DASHBOARD_PORT}"
    roots = [p for p in psutil.process_iter(["cmdline"]) if session.name in " ".join(p.info["cmdline"] or [])]
    family = {p for root in roots for p in [root, *root.children(recursive=True)]}
    for proc in family:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(family), timeout=30)
    current = Path("/tmp/ray/ray_current_cluster")  # `ray start` records its address for later ray.init()s
    if current.exists() and current.read_text().strip().endswith(":6399"):
        current.unlink()


def settings(home, **values):
    (home / "enroll.yaml").write_text(yaml.safe_dump(values))


def jobs(home):
    with SqliteGallery(home) as gallery:
        return gallery.jobs()


def test_retrain_promotes_a_warm_started_model(home, ray_head, capsys):  # noqa: F811
    settings(home, ray_address=ray_head, retrain_epochs=2, retrain_steps_per_epoch=3,
             promotion_max_drop=1.0, promotion_min_new_rank1=0.0)
    before = json.loads((home / "models/1/meta.json").read_text())
    code = cli.main(["retrain", "--wait", "--timeout", "600", "--json", "--home", str(home)])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(out)
    assert report["state"] == "succeeded", report
    assert (home / "PRODUCTION").read_text().strip() == "2"
    meta = json.loads((home / "models/2/meta.json").read_text())
    assert meta["source_run"] != before["source_run"] and "retrain-job" in meta["source_run"]
    plan = json.loads((Path(meta["source_run"]) / "plan.json").read_text())
    assert plan["init_from"] == before["source_checkpoint"], "warm start from the production weights"
    assert len(plan["shards"]["train"]) > 4, "base identities are replayed next to the enrolled people"
    with SqliteGallery(home) as gallery:
        assert gallery.check_consistency(2) == []
        assert len(gallery.embeddings(2)[0]) == 4
    assert sorted(int(p.name) for p in (home / "serving/facenet").iterdir() if p.name.isdigit())

    from mlflow.tracking import MlflowClient

    client = MlflowClient(plan["tracking_uri"])
    champion = client.get_model_version_by_alias("facenet", "champion")
    assert champion.tags["production_version"] == "2" and champion.run_id == plan["mlflow_run_id"]
    metrics = client.get_run(plan["mlflow_run_id"]).data.metrics
    assert metrics["compute/total_steps"] <= 6 and metrics["compute/total_train_flops"] > 0


def test_a_rejected_retrain_leaves_production_and_gallery_untouched(home, ray_head, capsys):  # noqa: F811
    settings(home, ray_address=ray_head, retrain_epochs=1, retrain_steps_per_epoch=2,
             promotion_min_new_rank1=1.5)  # no model can pass this gate
    production = (home / "PRODUCTION").read_text()
    with SqliteGallery(home) as gallery:
        people = gallery.list_people()
    code = cli.main(["retrain", "--wait", "--timeout", "600", "--home", str(home)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and len(err) == 1 and "rejected" in err[0], err
    assert jobs(home)[-1].state == "rejected" and "self-identify" in jobs(home)[-1].detail
    assert (home / "PRODUCTION").read_text() == production
    with SqliteGallery(home) as gallery:
        assert gallery.list_people() == people and gallery.check_consistency(int(production)) == []


def test_settings_reject_unknown_keys(home, capsys):  # noqa: F811
    (home / "enroll.yaml").write_text("retrain_after: 3\n")
    code = cli.main(["retrain", "--home", str(home)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and err == [err[0]] and "unknown setting 'retrain_after'" in err[0]
    (home / "enroll.yaml").unlink()


def test_identify_through_serving_matches_the_local_answer(home, lfw, capsys):  # noqa: F811
    """`enroll identify --server` asks TF-Serving's REST API (here the emulator serving the
    production export) and must agree with the in-process answer."""
    from serving.emulator import Repository, serve_rest
    from serving.export import main as export_main

    assert export_main(["--home", str(home)]) == 0
    capsys.readouterr()
    server = serve_rest(Repository(home / "serving"), port=0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        photo = str(lfw / "Colin_Powell" / "Colin_Powell_0003.jpg")
        assert cli.main(["identify", photo, "--json", "--home", str(home)]) == 0
        local = json.loads(capsys.readouterr().out)
        assert cli.main(["identify", photo, "--server", url, "--json", "--home", str(home)]) == 0
        remote = json.loads(capsys.readouterr().out)
    finally:
        server.shutdown()
    assert remote["name"] == local["name"]
    assert [c["name"] for c in remote["candidates"]] == [c["name"] for c in local["candidates"]]
    assert remote["distance"] == pytest.approx(local["distance"], abs=1e-4)


def test_reembedding_on_ray_tasks_matches_in_process(home, local_ray):  # noqa: F811
    """backfill with Ray up (as in the retraining job) gives the same vectors as in-process."""
    import numpy as np
    import tf_keras as keras

    from enroll.models import backfill

    model_dir = home / "models" / "1" / "model"
    model = keras.models.load_model(model_dir, compile=False)
    with SqliteGallery(home) as gallery:
        size = json.loads((home / "models/1/meta.json").read_text())["image_size"]
        assert backfill(gallery, 901, model, size, model_dir) > 0          # Ray tasks
        assert backfill(gallery, 902, model, size) > 0                     # this process
        names_ray, on_ray = gallery.embeddings(901)
        names_local, local = gallery.embeddings(902)
    assert names_ray == names_local
    np.testing.assert_allclose(on_ray, local, atol=1e-5)
