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
    subprocess.run([ray, "start", "--head", "--port", "6399", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(DASHBOARD_PORT), "--dashboard-agent-listen-port", "52399",
                    "--dashboard-agent-grpc-port", "52398", "--runtime-env-agent-port", "52397",
                    "--metrics-export-port", "52396", "--num-cpus", "2", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=180)
    # Its session is the one whose GCS listens on our port (other Rays may start meanwhile).
    (session,) = {Path(arg.split("=", 1)[1]).parent for p in psutil.process_iter(["cmdline"])
                  if "--gcs_server_port=6399" in (p.info["cmdline"] or [])
                  for arg in p.info["cmdline"] if arg.startswith("--log_dir=")}
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


def test_remove_person_leaves_no_trace_in_any_copy(home, trained_run, lfw, capsys):  # noqa: F811
    """After two retraining jobs (their exports, aligned shards, plans, MLflow artefacts) and
    several served versions, remove-person must leave nothing of the person in the home, the
    data cache, the runs or the MLflow store: not the name (as written or as a file-name slug),
    not a crop, not a vector of any model version."""
    from serving.export import export_home
    from trainer.prepare import _slug

    victim = "Donald Rumsfeld"
    export_home(home)  # one more served version naming them
    with SqliteGallery(home) as gallery:
        person = gallery.get(victim)
        crops = [gallery.crop(face.sha256) for face in person.faces]
        vectors = [v for version in (1, 2) for name, v in zip(*gallery.embeddings(version)) if name == victim]
    traces = {"name": victim.encode(), "slug": _slug(victim).encode(), "file name": b"Donald_Rumsfeld",
              **{f"crop {i}": c[len(c) // 2:len(c) // 2 + 48] for i, c in enumerate(crops)},
              **{f"crop hash {i}": f.sha256.encode() for i, f in enumerate(person.faces)},
              **{f"vector {i}": v.tobytes()[:64] for i, v in enumerate(vectors)}}
    data_dirs = [home, trained_run.parent]  # the home, and the runs, cache and MLflow store it trained with

    def found():
        hits = {}
        for root in data_dirs:
            for path in (p for p in root.rglob("*") if p.is_file()):
                blob = str(path.relative_to(root)).encode() + b"\0" + path.read_bytes()  # names count too
                for what, needle in traces.items():
                    if needle in blob:
                        hits.setdefault(what, []).append(str(path.relative_to(root.parent)))
        return hits

    before, exports = found(), len(list(home.glob(f"retrain/job-*/people/{victim}")))
    assert {"name", "slug", "vector 0", "crop hash 0"} <= set(before), before  # the search finds copies
    assert any("retrain/job-" in p for p in before["name"]), before
    assert any("serving/" in p for what, paths in before.items() if what.startswith("vector") for p in paths), before
    assert cli.main(["remove-person", victim, "--json", "--home", str(home)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["copies_deleted"]["retraining_exports"] == exports >= 1 and report["copies_deleted"]["served_versions_deleted"] >= 2
    assert found() == {}
    with SqliteGallery(home) as gallery:
        people = {name for name, _ in gallery.list_people()}
        assert victim not in people and gallery.check_consistency(int((home / "PRODUCTION").read_text())) == []
    from enroll.forget import served_people
    from serving import versions

    newest = versions.version_dir(home / "serving", "facenet")
    assert served_people(newest) == people  # the others are still served
