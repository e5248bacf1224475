"""``enroll`` end to end: a real (tiny, briefly trained) run as the production model, real LFW photos.

The tiny model is weak, so these tests check behaviour, not accuracy: one-shot enrolment, answers
that name enrolled people with finite distances, "unknown" exactly beyond τ, an enrolled photo
identifying its own person, one-line errors that leave the gallery as it was, --json everywhere.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enroll import cli
from enroll.store import SqliteGallery

REPO = Path(__file__).resolve().parents[1]
PEOPLE = ["Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder"]


@pytest.fixture(scope="module")
def lfw(shared_data):
    return shared_data / "lfw_mini"


def photo(lfw, person, n):
    return str(lfw / person / f"{person}_{n:04d}.jpg")


def enroll(capsys, *argv, home=None):
    """Run the CLI in-process; returns (exit code, stdout, stderr lines)."""
    code = cli.main([*argv, *(["--home", str(home)] if home else [])])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def run_json(capsys, *argv, home):
    code, out, err = enroll(capsys, *argv, "--json", home=home)
    return code, json.loads(out), err


@pytest.fixture(scope="module")
def home(trained_run, lfw, tmp_path_factory):
    """A production home with four people enrolled from one photo each (their _0001)."""
    home = tmp_path_factory.mktemp("facenet-home")
    assert cli.main(["init", "--run", str(trained_run), "--home", str(home)]) == 0
    for person in PEOPLE:
        assert cli.main(["add-person", person.replace("_", " "), photo(lfw, person, 1), "--home", str(home)]) == 0
    return home


def state(home):
    """Everything a refused command must leave untouched."""
    with SqliteGallery(home) as g:
        files = sorted(str(p.relative_to(home)) for p in (home / "crops").rglob("*"))
        return g.list_people(), g.gallery_version(), [j.id for j in g.jobs()], files, (home / "PRODUCTION").read_text()


def test_init_writes_the_layout_and_calibrates(home, trained_run):
    assert (home / "PRODUCTION").read_text().strip() == "1"
    meta = json.loads((home / "models/1/meta.json").read_text())
    for key in ("version", "model_name", "image_size", "embedding_dim", "threshold", "far_target", "source_run",
                "source_checkpoint", "created"):
        assert key in meta, key
    assert meta["model_name"] == "tiny" and meta["image_size"] == 32 and meta["embedding_dim"] == 128
    assert meta["source_run"] == str(trained_run) and meta["threshold"] > 0
    # The tiny run's validation split has far fewer than 1,000 different-person pairs.
    assert meta["threshold_method"] == "best_accuracy" and meta["calibration"]["different_pairs"] < 1000
    assert (home / "models/1/model/saved_model.pb").exists() and (home / "gallery.db").exists()
    # The FAR is the home's policy: `init` without --far-target records the one default there.
    assert meta["far_target"] == 1e-3 and "far_target: 0.001" in (home / "enroll.yaml").read_text()


def test_init_records_the_far_target_in_the_homes_policy(trained_run, tmp_path, capsys):
    """`init --far-target` writes the FAR into enroll.yaml (the rest of the file as it was), a later
    `init` without it calibrates at that FAR, and a refused `init` leaves the policy untouched."""
    import yaml

    home = tmp_path / "home"
    home.mkdir()
    (home / "enroll.yaml").write_text("# my policy\nretrain_after_changes: 0  # on demand\nfar_target: 0.5\n")
    code, r, _ = run_json(capsys, "init", "--run", str(trained_run), "--far-target", "0.02", home=home)
    assert code == 0 and r["far_target"] == 0.02
    text = (home / "enroll.yaml").read_text()
    assert text.startswith("# my policy\nretrain_after_changes: 0  # on demand\n"), text
    assert yaml.safe_load(text) == {"retrain_after_changes": 0, "far_target": 0.02}
    not_a_run = tmp_path / "not-a-run"
    not_a_run.mkdir()
    for where in (home, tmp_path / "new-home"):
        code, _, err = enroll(capsys, "init", "--run", str(not_a_run), "--far-target", "0.3", home=where)
        assert code == 1 and len(err) == 1 and err[0].startswith("error: cannot load run"), err
    assert (home / "enroll.yaml").read_text() == text and not (tmp_path / "new-home").exists()
    code, r, _ = run_json(capsys, "init", "--run", str(trained_run), home=home)
    assert code == 0 and r["version"] == 2 and r["far_target"] == 0.02
    assert json.loads((home / "models/2/meta.json").read_text())["far_target"] == 0.02
    code, s, _ = run_json(capsys, "status", home=home)
    assert s["far_target"] == s["policy_far_target"] == 0.02


def test_one_shot_identify_and_verify(home, lfw, capsys):
    enrolled = {p.replace("_", " ") for p in PEOPLE}
    for person in PEOPLE:
        code, r, _ = run_json(capsys, "identify", photo(lfw, person, 1), home=home)  # the enrolled photo itself
        assert code == 0 and r["name"] == person.replace("_", " ") and r["distance"] < 1e-3
        code, r, _ = run_json(capsys, "identify", photo(lfw, person, 2), "--top-k", "3", home=home)
        assert code == 0 and len(r["candidates"]) == 3
        assert {c["name"] for c in r["candidates"]} <= enrolled
        distances = [c["distance"] for c in r["candidates"]]
        assert distances == sorted(distances) and all(0 <= d < 2.01 for d in distances)
        best = r["candidates"][0]
        assert r["name"] == (best["name"] if best["distance"] <= r["threshold"] else "unknown")
        assert r["distance"] == best["distance"]
    code, r, _ = run_json(capsys, "verify", photo(lfw, "Colin_Powell", 1), "--name", "Colin Powell", home=home)
    assert code == 0 and r["match"] is True and r["distance"] < 1e-3
    code, r, _ = run_json(capsys, "verify", photo(lfw, "Hugo_Chavez", 1), "--name", "Colin Powell", home=home)
    assert code == 0 and r["match"] == (r["distance"] <= r["threshold"])
    code, out, err = enroll(capsys, "identify", photo(lfw, "Hugo_Chavez", 2), home=home)
    assert code == 0 and err == [] and any(out.startswith(n) for n in enrolled | {"unknown"})


def test_list_and_status(home, capsys):
    code, r, _ = run_json(capsys, "list", home=home)
    assert code == 0 and {p["name"] for p in r["people"]} >= {p.replace("_", " ") for p in PEOPLE}
    code, s, _ = run_json(capsys, "status", home=home)
    assert code == 0 and s["production_version"] in (1, 2) and s["threshold"] > 0 and s["people"] >= 4
    assert {c["kind"] for c in s["class_changes_since_production"]} <= {"add", "append", "remove"}
    code, out, _ = enroll(capsys, "status", home=home)
    assert code == 0 and "production model: version" in out and "class changes since" in out


@pytest.mark.parametrize("case", ["corrupt", "text", "tiny", "missing", "directory", "no_face", "empty_name",
                                  "slash", "control", "too_long", "duplicate", "append_unknown", "several_faces"])
def test_bad_input_is_one_error_line_and_changes_nothing(case, home, lfw, tmp_path, capsys):
    from PIL import Image

    good = photo(lfw, "Hugo_Chavez", 3)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(Path(good).read_bytes()[:2000])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (10, 10), "white").save(tiny)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "gray").save(blank)
    argv, message = {
        "corrupt": (["Newcomer", str(corrupt)], "corrupt image"),
        "text": (["Newcomer", str(text)], "not an image"),
        "tiny": (["Newcomer", str(tiny)], "too small"),
        "missing": (["Newcomer", str(tmp_path / "nope.jpg")], "file not found"),
        "directory": (["Newcomer", str(tmp_path)], "is a directory"),
        "no_face": (["Newcomer", str(blank)], "no face"),
        "empty_name": (["", good], "name is empty"),
        "slash": (["a/b", good], "path separators"),
        "control": (["bad\x1bname", good], "control characters"),
        "too_long": (["x" * 101, good], "limit is 100"),
        "duplicate": (["Colin Powell", good], "already enrolled"),
        "append_unknown": (["Nobody Yet", good, "--append"], "nothing to append"),
        "several_faces": (["Newcomer", photo(lfw, "Tony_Blair", 1)], "several faces"),
    }[case]
    before = state(home)
    code, out, err = enroll(capsys, "add-person", *argv, home=home)
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], (out, err)
    assert state(home) == before


@pytest.mark.parametrize("argv, message", [
    (["identify", "/no/such.jpg"], "file not found"),
    (["verify", "PHOTO", "--name", "Nobody"], "no person named 'Nobody'"),
    (["remove-person", "Nobody"], "no person named 'Nobody'"),
    (["remove-person", "a/b"], "path separators"),
    (["identify", "PHOTO", "--top-k", "0"], "at least 1"),
    (["init", "--run", "/no/such/run"], "run directory not found"),
    (["identify"], "arguments are required"),
    (["frobnicate"], "invalid choice"),
])
def test_other_errors(argv, message, home, lfw, capsys):
    argv = [photo(lfw, "Hugo_Chavez", 1) if a == "PHOTO" else a for a in argv]
    before = state(home)
    code, out, err = enroll(capsys, *argv, home=home)
    assert code in (1, 2) and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert state(home) == before


def test_no_production_model_yet(tmp_path, lfw, capsys):
    home = tmp_path / "fresh"
    for argv in (["identify", photo(lfw, "Hugo_Chavez", 1)], ["add-person", "Ada", photo(lfw, "Hugo_Chavez", 1)]):
        code, out, err = enroll(capsys, *argv, home=home)
        assert code == 1 and err == [err[0]] and "enroll init --run" in err[0]
    code, r, _ = run_json(capsys, "status", home=home)
    assert code == 0 and r["production_version"] is None and r["people"] == 0
    assert not home.exists()  # read-only commands create nothing


def test_append_several_faces_and_remove(home, lfw, capsys):
    # (--retrain submits a Ray job: tests/test_retrain.py covers it against a Ray head it manages)
    code, r, err = run_json(capsys, "add-person", "Tony Blair", photo(lfw, "Tony_Blair", 1), photo(lfw, "Tony_Blair", 2),
                            photo(lfw, "Tony_Blair", 2), "--allow-several-faces", home=home)
    assert code == 0 and r["faces_added"] == 2 and [p["accepted"] for p in r["photos"]] == [True, True, False]
    assert "largest was kept" in r["photos"][0]["reason"] and "same face crop" in r["photos"][2]["reason"]
    assert "retrain" not in r  # no policy in enroll.yaml: nothing submitted
    code, r, _ = run_json(capsys, "add-person", "Tony Blair", photo(lfw, "Tony_Blair", 3), "--append", home=home)
    assert code == 0 and r["faces_total"] == 3
    with SqliteGallery(home) as g:
        assert not g.jobs()
        shas = [f.sha256 for f in g.get("Tony Blair").faces]
    code, r, _ = run_json(capsys, "remove-person", "Tony Blair", home=home)
    nothing_copied = {"retraining_exports": 0, "aligned_shards": 0, "run_plans": 0, "served_versions_deleted": 0,
                      "served_versions_exported": 0}  # no retraining or export yet: only the gallery held them
    assert code == 0 and r == {"removed": "Tony Blair", "faces": 3, "copies_deleted": nothing_copied, "retrain": None}
    with SqliteGallery(home) as g:
        assert g.get("Tony Blair") is None and "Tony Blair" not in g.embeddings(1)[0] + g.embeddings(2)[0]
        assert g.changes_since(0)[-1].kind == "remove" and g.check_consistency() == []
    assert not [s for s in shas if list((home / "crops").rglob(f"{s}*"))]
    code, r, _ = run_json(capsys, "identify", photo(lfw, "Tony_Blair", 2), home=home)
    assert "Tony Blair" not in [c["name"] for c in r["candidates"]]


def test_registering_a_new_run_re_embeds_everyone_before_switching(home, trained_run, lfw, capsys):
    code, r, _ = run_json(capsys, "init", "--run", str(trained_run), home=home)
    assert code == 0 and r["version"] == 2 and (home / "PRODUCTION").read_text().strip() == "2"
    with SqliteGallery(home) as g:
        assert g.check_consistency(model_version=2) == [] and len(g.embeddings(2)[0]) == len(g.embeddings(1)[0])
    code, r, _ = run_json(capsys, "identify", photo(lfw, "George_W_Bush", 1), home=home)
    assert r["model_version"] == 2 and r["name"] == "George W Bush"
    code, s, _ = run_json(capsys, "status", home=home)
    with SqliteGallery(home) as g:  # the run saw no gallery class: every change is still to learn
        assert s["production_version"] == 2 and len(s["class_changes_since_production"]) == g.gallery_version()


def test_cold_cli_processes_in_parallel_and_clean_stderr(home, lfw, tmp_path):
    """Three `enroll add-person` processes at once (the real console entry point), then errors as
    a script sees them: one stderr line, no TensorFlow log noise, parseable --json."""
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    env = {**os.environ, "FACENET_HOME": str(copy)}
    people = ["Hugo_Chavez", "Jacques_Chirac", "Vladimir_Putin"]
    procs = [subprocess.Popen([sys.executable, "-m", "enroll.cli", "add-person", p, photo(lfw, p, 2), "--json"],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in people]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outs]
    assert all(json.loads(out)["faces_added"] == 1 for out, _ in outs)
    with SqliteGallery(copy) as g:
        version = int((copy / "PRODUCTION").read_text())
        assert {n for n, _ in g.list_people()} >= set(people) and g.check_consistency(model_version=version) == []
    result = subprocess.run([sys.executable, "-m", "enroll.cli", "identify", str(tmp_path / "missing.jpg")],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.splitlines() == [f"error: {tmp_path / 'missing.jpg'}: file not found"]


def test_register_run_embeds_late_enrolments_before_switching(trained_run, tmp_path):
    """An enrolment committing (with the old model's vectors) while a new run is being registered
    must get a vector of the new version before PRODUCTION names it."""
    import numpy as np

    from enroll.crops import encode_png
    from enroll.model_versions import production_version, register_run
    from enroll.store import InMemoryGallery

    rng = np.random.default_rng(0)
    crop = lambda: encode_png(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))  # noqa: E731
    gallery = InMemoryGallery()
    gallery.add_person("early", [(crop(), "early.png")], {0: np.ones((1, 128))})
    real_switch, late = gallery.switch_if_complete, []

    def switch_after_a_late_arrival(version, switch):
        if not late:
            late.append(gallery.add_person("late", [(crop(), "late.png")], {0: np.ones((1, 128))}))
        return real_switch(version, switch)

    gallery.switch_if_complete = switch_after_a_late_arrival
    version = register_run(trained_run, tmp_path / "home", gallery=gallery)
    assert production_version(tmp_path / "home") == version and late
    assert gallery.faces_without(version) == [] and gallery.check_consistency(model_version=version) == []


def test_enrolment_retries_when_the_model_changes_underneath(home, lfw, tmp_path):
    from enroll import service
    from enroll.model_versions import StaleModel, guard_for

    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    version = int((copy / "PRODUCTION").read_text())
    guard_for(copy, version)()  # the production model: passes
    with pytest.raises(StaleModel):
        guard_for(copy, version + 1)()
    with SqliteGallery(copy) as gallery:
        real_add, attempts = gallery.add_person, []

        def add_once_stale(*args, **kwargs):
            attempts.append(1)
            if len(attempts) == 1:
                raise StaleModel("production model changed")
            return real_add(*args, **kwargs)

        gallery.add_person = add_once_stale
        report = service.add_person(gallery, copy, "Jacques Chirac", [photo(lfw, "Jacques_Chirac", 1)])
        assert len(attempts) == 2 and report["faces_total"] == 1 and gallery.check_consistency(version) == []


def test_a_broken_policy_file_refuses_remove_person_before_removing(home, capsys):
    (home / "enroll.yaml").write_text("retrain_after: 3\n")
    try:
        before = state(home)
        code, _, err = enroll(capsys, "remove-person", "Colin Powell", home=home)
        assert code == 1 and len(err) == 1 and "unknown setting 'retrain_after'" in err[0], err
        assert state(home) == before
    finally:
        (home / "enroll.yaml").unlink()
