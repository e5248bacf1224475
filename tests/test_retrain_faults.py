"""Retraining that does not end well: cancelled, its driver killed, its promotion interrupted.

Whatever happens to a retraining, the production model, the gallery and the served version must
each stay whole: PRODUCTION names a version whose every face has a vector, the newest TF-Serving
version loads and names exactly the enrolled people, and the job row ends in a final state
(asked of Ray when the job could not record it). Kills are real signals to real processes.
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from enroll import cli
from enroll.forget import served_people
from enroll.store import SqliteGallery
from serving import versions
from tests.test_enroll_cli import home, lfw, photo  # noqa: F401  (module fixtures reused)
from tests.test_retrain import jobs, ray_head, settings  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def snapshot(home):
    """What a failed or cancelled retraining must leave exactly as it was."""
    with SqliteGallery(home) as gallery:
        return ((home / "PRODUCTION").read_text(), sorted(p.name for p in (home / "models").iterdir()),
                gallery.list_people(), versions.list_versions(home / "serving", "facenet"))


def assert_whole(home):
    version = int((home / "PRODUCTION").read_text())
    assert (home / "models" / str(version) / "model").is_dir()
    with SqliteGallery(home) as gallery:
        assert gallery.check_consistency(version) == []
        people = {name for name, _ in gallery.list_people()}
    served = versions.list_versions(home / "serving", "facenet")
    assert served, "a version is always served"
    for number in served:  # no half-written version is ever visible to TF-Serving
        directory = home / "serving" / "facenet" / str(number)
        assert (directory / "saved_model.pb").is_file() and (directory / "assets.extra" / "metadata.json").is_file()
    newest = home / "serving" / "facenet" / str(served[-1])
    metadata = json.loads((newest / "assets.extra" / "metadata.json").read_text())
    assert (home / "models" / str(metadata["model_version"]) / "model").is_dir()
    assert served_people(newest) == people
    return version, metadata["model_version"]


def start_long_retrain(home, ray_head, capsys):  # noqa: F811
    settings(home, ray_address=ray_head, retrain_epochs=50, retrain_steps_per_epoch=50,
             promotion_max_drop=1.0, promotion_min_new_rank1=0.0)
    assert cli.main(["retrain", "--json", "--home", str(home)]) == 0
    job_id = json.loads(capsys.readouterr().out)["job"]
    deadline = time.time() + 300
    while jobs(home)[-1].state != "running" or not list((home / "runs").glob(f"retrain-job{job_id}-*/plan.json")):
        assert time.time() < deadline, jobs(home)[-1]
        time.sleep(1)
    return job_id


def test_a_cancelled_retrain_changes_nothing(home, ray_head, capsys):  # noqa: F811
    from enroll.serving_export import export_home

    export_home(home)
    before = snapshot(home)
    job_id = start_long_retrain(home, ray_head, capsys)
    code = cli.main(["retrain", "--cancel", str(job_id), "--json", "--home", str(home)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["state"] == "cancelled", report
    assert snapshot(home) == before
    assert_whole(home)
    assert not [p for p in psutil.process_iter(["cmdline"])
                if f"--job {job_id}" in " ".join(p.info["cmdline"] or []) and str(home) in " ".join(p.info["cmdline"] or [])]
    code = cli.main(["retrain", "--cancel", str(job_id), "--home", str(home)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and err == [f"error: retraining job {job_id} already ended cancelled"]


def test_a_retrain_whose_driver_dies_is_failed_and_changes_nothing(home, ray_head, capsys):  # noqa: F811
    before = snapshot(home)
    job_id = start_long_retrain(home, ray_head, capsys)
    (driver,) = [p for p in psutil.process_iter(["cmdline"])  # the Python process, not the shell around it
                 if (p.info["cmdline"] or [])[1:3] == ["-m", "enroll.retrain_job"]
                 and f"--home {home} --job {job_id}" in " ".join(p.info["cmdline"])]
    driver.send_signal(signal.SIGKILL)  # no chance to record anything: only Ray knows
    deadline = time.time() + 120
    while True:  # `enroll status` asks Ray about jobs that have not recorded an end
        assert cli.main(["status", "--json", "--home", str(home)]) == 0
        row = next(j for j in json.loads(capsys.readouterr().out)["jobs"] if j["id"] == job_id)
        if row["state"] != "running":
            break
        assert time.time() < deadline, row
        time.sleep(1)
    assert row["state"] == "failed" and "Ray job FAILED" in row["detail"], row
    assert snapshot(home) == before
    assert_whole(home)


PROMOTE = """
import json, sys
from pathlib import Path
import enroll
from enroll.retrain_job import promote
from enroll.store import SqliteGallery
from trainer.run_plan import RunPlan
home, run = Path(sys.argv[1]), Path(sys.argv[2])
plan = RunPlan.load(run)
with SqliteGallery(home) as gallery:
    print("promoting", flush=True)
    print(json.dumps(promote(home, plan, 0.5, gallery, gallery.gallery_version())), flush=True)
"""


def promotion(home, run, kill_when=None) -> bool:
    """Run a promotion in its own process, SIGKILLed as soon as ``kill_when(home)`` holds
    (polled every 2 ms). Returns whether it was killed (False: it finished first)."""
    proc = subprocess.Popen([sys.executable, "-c", PROMOTE, str(home), str(run)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "promoting"
    while proc.poll() is None:
        if kill_when is not None and kill_when(home):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    assert proc.returncode == 0, proc.stdout.read()
    return False


def models(home):
    return max(int(p.name) for p in (home / "models").iterdir() if p.name.isdigit())


def served(home):
    return versions.latest_version(home / "serving", "facenet")


def test_a_promotion_killed_in_each_phase_leaves_one_consistent_served_version(home, trained_run, lfw, tmp_path):  # noqa: F811
    import shutil

    from enroll.serving_export import export_home

    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    if not versions.list_versions(copy / "serving", "facenet"):
        export_home(copy)
    assert not promotion(copy, trained_run)  # an uninterrupted promotion: production and serving move together
    assert assert_whole(copy)[1] == int((copy / "PRODUCTION").read_text())
    phases = {  # each a state that exists only between two steps of promote()
        "model stored, PRODUCTION not yet switched": lambda h, was: models(h) > was["models"],
        "PRODUCTION switched, serving export not started": lambda h, was: (h / "PRODUCTION").read_text() != was["production"],
        "serving version half written": lambda h, was: any((h / "serving" / "facenet").glob(".tmp-*")),
        "served, MLflow champion not yet moved": lambda h, was: served(h) > was["served"],
    }
    for phase, reached in phases.items():
        was = {"models": models(copy), "production": (copy / "PRODUCTION").read_text(), "served": served(copy)}
        assert promotion(copy, trained_run, lambda h: reached(h, was)), f"finished before: {phase}"
        production, serving = assert_whole(copy)
        assert serving <= production, phase  # serving may lag one promotion, never lead or mix
        assert cli.main(["identify", photo(lfw, "Colin_Powell", 2), "--home", str(copy)]) == 0, phase
    export_home(copy)  # what an operator (or the next promotion) runs: serving catches up
    assert assert_whole(copy)[1] == int((copy / "PRODUCTION").read_text())
