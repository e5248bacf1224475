"""The debounced gallery-only export (enroll/serving_sync.py), served by the TF-Serving emulator over
REST: several changes inside one window give one version, the served gallery then equals the
database's, and `enroll export-serving --watch` (a real process, stopped by SIGTERM) follows changes."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from serving import versions
from serving.rest_client import RestClient
from serving.testing.emulator import Repository, serve_rest

SIZE = 32
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A home with a tiny production model (version 3, τ between enrolled faces and strangers)."""
    import tf_keras as keras

    from enroll import home as layout
    from trainer.models import build_model

    keras.utils.set_random_seed(5)
    model = build_model("tiny", input_size=SIZE)
    images = np.random.default_rng(5).uniform(0, 255, (6, SIZE, SIZE, 3)).astype(np.float32)
    emb = model(images, training=False).numpy()
    gaps = np.linalg.norm(emb[:, None] - emb[None], axis=2)[~np.eye(6, dtype=bool)]
    assert gaps.min() > 0.005
    home = tmp_path_factory.mktemp("home")
    model.save(str(layout.saved_model_dir(home, 3)), include_optimizer=False)
    layout.meta_file(home, 3).write_text(json.dumps({"version": 3, "threshold": float(gaps.min() / 2)}))
    layout.write_production(home, 3)
    return home, images, emb


def _enrol(gallery, name, emb):
    gallery.add_person(name, [(f"crop of {name}".encode(), f"{name}.jpg")], {3: emb[None]})


def _served(base):
    from enroll.forget import served_people

    return served_people(versions.version_dir(base, "facenet"))


def test_changes_in_one_window_make_one_version_matching_the_database(world):
    from enroll.serving_sync import ServingExporter
    from enroll.store import SqliteGallery

    home, images, emb = world
    base = home / "serving"
    server = serve_rest(Repository(base))
    client = RestClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=30)
    names = ["ann", "bob", "cy"]
    try:
        with SqliteGallery(home) as gallery:
            exporter = ServingExporter(home, debounce_s=2.0, gallery_version=gallery.gallery_version)
            changed = time.monotonic()
            for i, name in enumerate(names):  # three enrolments, each announced, inside one window
                _enrol(gallery, name, emb[i])
                exporter.notify_changed()
            assert exporter.flush(timeout=120)
            assert versions.list_versions(base, "facenet") == [1]
            assert client.identify(images[:4]).best == names + [None]
            lag = time.monotonic() - changed
            assert _served(base) == {n for n, _ in gallery.list_people()}

            gallery.remove_person("bob")  # a removal, then a notification with nothing new
            exporter.notify_changed()
            assert exporter.flush(timeout=120)
            assert client.identify(images[:3]).best == ["ann", None, "cy"]
            exporter.notify_changed()
            exporter.close()
            assert _served(base) == {n for n, _ in gallery.list_people()} == {"ann", "cy"}
        assert versions.list_versions(base, "facenet") == [1, 2]
        first, second, third = exporter.records
        assert not first.skipped and first.version == 1 and first.gallery_faces == 3
        assert second.version == 2 and second.gallery_faces == 2 and third.skipped
        assert second.seconds < first.seconds  # gallery-only: the network is not serialised again
        assert 2.0 <= lag < 2.0 + first.seconds + 30
    finally:
        server.shutdown()


def test_watch_command_follows_the_database_until_sigterm(world):
    from enroll.store import SqliteGallery

    home, images, emb = world
    proc = subprocess.Popen([sys.executable, "-m", "enroll.cli", "export-serving", "--watch", "--home", str(home),
                             "--debounce", "0.5", "--poll", "0.2", "--keep-versions", "2",
                             "--heartbeat", str(home.parent / "alive")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()  # the newest version already serves the database's state
        assert first.startswith("up to date: the newest version serves model version 3"), first
        with SqliteGallery(home) as gallery:
            _enrol(gallery, "dee", emb[3])
            added = proc.stdout.readline()
            gallery.remove_person("cy")
            removed = proc.stdout.readline()
            people = {n for n, _ in gallery.list_people()}
        assert time.time() - (home.parent / "alive").stat().st_mtime < 30  # a liveness probe's view
        assert added.startswith("exported version 3 ") and "3 faces" in added, added
        assert removed.startswith("exported version 4 ") and "2 faces" in removed, removed
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert out.strip().splitlines()[-1] == "stopped: 2 versions exported, 0 failed exports"
    assert versions.list_versions(home / "serving", "facenet") == [3, 4]  # pruned to the newest 2
    assert _served(home / "serving") == people == {"ann", "dee"}


def test_watch_refuses_options_it_would_ignore(world, capsys):
    from enroll import cli

    home = world[0]
    for argv, message in ((["--threshold", "1"], "drop --model-version"), (["--debounce", "-1"], "--debounce"),
                          (["--keep-versions", "0"], "--keep-versions")):
        assert cli.main(["export-serving", "--watch", "--home", str(home), *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
