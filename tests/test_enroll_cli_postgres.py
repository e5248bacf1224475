"""``enroll`` on a PostgreSQL gallery (FACENET_GALLERY_URL): add-person, list, identify, remove-person
end to end on real LFW photos, with the models still in the home and nothing of the gallery there.

The production model is the tiny network untrained (random weights, saved as version 1): these
tests check where things are stored and what the commands answer, not accuracy; an enrolled photo
is its own nearest face at distance 0 whatever the weights.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from enroll import cli
from enroll.backends import URL_ENV
from enroll.postgres_schema import HEAD
from tests.test_enroll_cli import photo

pytest.importorskip("psycopg", reason="the PostgreSQL gallery needs psycopg: pip install -e '.[api]'")
from enroll.postgres_store import PostgresGallery  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_home(tmp_path_factory):
    """A home whose production model (version 1) is the untrained tiny network at 32 px."""
    from enroll.home import store_version, write_production
    from trainer.models import build_model

    home = tmp_path_factory.mktemp("pg-home")
    meta = {"model_name": "tiny", "image_size": 32, "embedding_dim": 128, "threshold": 0.05, "far_target": 1e-3,
            "source_run": str(home / "no-run"), "created": "now"}
    write_production(home, store_version(home, build_model("tiny", 128, 32), meta))
    return home


def run(capsys, home, *argv):
    code = cli.main([*argv, "--json", "--home", str(home)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), [line for line in err.splitlines() if line.strip()]


def test_add_identify_remove_through_the_cli_on_postgresql(model_home, shared_data, postgres_url, monkeypatch, capsys):
    lfw = shared_data / "lfw_mini"
    monkeypatch.setenv(URL_ENV, postgres_url)
    code, result, _ = run(capsys, model_home, "db", "upgrade")
    assert code == 0 and result["backend"] == "postgresql" and result["before"] == result["after"] == HEAD
    for person in ("Colin_Powell", "George_W_Bush"):
        code, result, err = run(capsys, model_home, "add-person", person.replace("_", " "), photo(lfw, person, 1))
        assert code == 0, err
    code, result, _ = run(capsys, model_home, "list")
    assert result["people"] == [{"name": "Colin Powell", "faces": 1}, {"name": "George W Bush", "faces": 1}]
    assert not (model_home / "gallery.db").exists() and not (model_home / "crops").exists()  # all in the database
    with PostgresGallery(postgres_url) as g:
        colin = g.get("Colin Powell")
        assert g.crop(colin.faces[0].sha256)[:8] == b"\x89PNG\r\n\x1a\n" and g.check_consistency(model_version=1) == []

    code, result, _ = run(capsys, model_home, "identify", photo(lfw, "Colin_Powell", 1))
    assert code == 0 and result["name"] == "Colin Powell" and result["distance"] < 1e-3

    code, result, err = run(capsys, model_home, "add-person", "Colin Powell", photo(lfw, "Colin_Powell", 2))
    assert code == 1 and len(err) == 1 and "already enrolled" in err[0]

    code, result, err = run(capsys, model_home, "remove-person", "Colin Powell")
    assert code == 0 and result["removed"] == "Colin Powell", err
    code, result, _ = run(capsys, model_home, "identify", photo(lfw, "Colin_Powell", 1))
    assert code == 0 and result["name"] != "Colin Powell"
    assert all(c["name"] != "Colin Powell" for c in result["candidates"])
    with PostgresGallery(postgres_url) as g:
        assert g.list_people() == [("George W Bush", 1)] and g.crop(g.get("George W Bush").faces[0].sha256)
        assert [c.name for c in g.changes_since(0)] == ["", "George W Bush", ""]  # the removed name is gone


def test_the_enroll_command_reads_the_url_from_the_environment(postgres_url, tmp_path):
    """A real `enroll` process: FACENET_GALLERY_URL alone points it at the database; a bad URL is
    one error line and exit 1, quickly."""
    with PostgresGallery(postgres_url) as g:
        g.add_person("Ada", [(b"crop" * 50, "a.jpg")], {1: [[1.0, 0.0]]})
    env = {**os.environ, URL_ENV: postgres_url}
    done = subprocess.run([sys.executable, "-m", "enroll.cli", "list", "--json", "--home", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout)["people"] == [{"name": "Ada", "faces": 1}], done.stderr
    for url in ("postgresql://nobody:secret@127.0.0.1:1/gallery", "sqlite:///gallery.db"):
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "enroll.cli", "list", "--home", str(tmp_path)],
                              capture_output=True, text=True, env={**env, URL_ENV: url}, cwd=REPO, timeout=120)
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1 and len(errors) == 1 and errors[0].startswith("error: "), done.stderr
        assert "secret" not in done.stderr and time.time() - started < 60
