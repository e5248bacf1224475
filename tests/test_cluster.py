"""``enroll cluster`` (enroll/cluster_command.py) and its algorithms (enroll/clustering.py).

The algorithms must recover well-separated synthetic identities exactly. The CLI runs on real LFW
photos with the real tiny production model of tests/test_enroll_cli.py; that model is weak, so
the CLI tests check behaviour (every face listed once, copies of one photo grouped together, group
photos said to be, --enroll-as enrolling each group through add-person, refusals storing nothing),
not how well it tells people apart (experiments/clustering.py measures that).
"""
import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from enroll import cli, clustering
from enroll.index import normalise
from enroll.store import SqliteGallery
from tests.test_enroll_cli import enroll, lfw, photo, run_json, state  # noqa: F401  (fixtures)

SIZES = [9, 7, 5, 4, 3]  # distinct sizes: the canonical numbering (largest first) is the truth's


def separated(sizes=SIZES, dim=128, spread=0.2, seed=0):
    """Unit vectors around one random centre per identity: same-person distances ≈ spread·√2 ≪ 1.4."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.normal(size=(len(sizes), dim)))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    vectors = normalise(centres[truth] + rng.normal(size=(len(truth), dim)) * spread / np.sqrt(dim))
    order = rng.permutation(len(truth))  # members of a group are not contiguous
    return vectors[order], truth[order]


def same_partition(labels, truth) -> bool:
    return len(set(zip(labels, truth))) == len(set(labels)) == len(set(truth))


@pytest.mark.parametrize("method", clustering.METHODS)
def test_well_separated_identities_are_recovered_exactly(method):
    vectors, truth = separated()
    labels = clustering.cluster(vectors, 0.8, method)
    assert same_partition(labels, truth)
    assert [int((labels == k).sum()) for k in range(labels.max() + 1)] == SIZES  # numbered largest first


def test_numpy_chinese_whispers_recovers_them_too_and_is_seeded():
    vectors, truth = separated(seed=3)
    labels = clustering.canonical(clustering._whispers(vectors, 0.8, seed=7))
    assert same_partition(labels, truth)
    assert (clustering.canonical(clustering._whispers(vectors, 0.8, seed=7)) == labels).all()


def test_a_lone_face_is_a_group_of_its_own_in_every_method():
    vectors, truth = separated([4, 4, 1])
    for method in clustering.METHODS:  # DBSCAN's noise label -1 is one group per face, not one group
        labels = clustering.cluster(vectors, 0.8, method)
        assert same_partition(labels, truth), method
    assert list(clustering.canonical([-1, 0, -1, 0, 0])) == [1, 0, 2, 0, 0]
    pair, _ = separated([2])  # DBSCAN: two faces are no core (DBSCAN_MIN_SAMPLES = 3), so two groups
    assert list(clustering.cluster(pair, 0.8, "dbscan")) == [0, 1]
    assert list(clustering.cluster(pair, 0.8, "chinese_whispers")) == [0, 0]
    assert clustering.cluster(np.zeros((0, 8)), 0.5).shape == (0,)
    assert list(clustering.cluster(np.ones((1, 8)), 0.5, "agglomerative")) == [0]


@pytest.mark.parametrize("method, threshold", [("kmeans", 0.5), ("dbscan", 0.0), ("dbscan", float("nan"))])
def test_bad_method_or_threshold_is_refused(method, threshold):
    with pytest.raises(clustering.ClusteringError):
        clustering.cluster(np.eye(3), threshold, method)


@pytest.fixture(scope="module")
def home(trained_run, tmp_path_factory):  # noqa: F811
    home = tmp_path_factory.mktemp("cluster-home")
    assert cli.main(["init", "--run", str(trained_run), "--home", str(home)]) == 0
    return home


@pytest.fixture(scope="module")
def folder(lfw, tmp_path_factory):  # noqa: F811
    """Three people's photos, nested; a copy of one photo; a group photo; a non-photo and hidden files."""
    root = tmp_path_factory.mktemp("album")
    for person, numbers in (("Colin_Powell", (1, 2)), ("Hugo_Chavez", (1, 2)), ("Tony_Blair", (1, 2))):
        where = root / ("trip/day 2" if person == "Tony_Blair" else person)
        where.mkdir(parents=True, exist_ok=True)
        for n in numbers:
            shutil.copy(photo(lfw, person, n), where)
    shutil.copy(photo(lfw, "Colin_Powell", 1), root / "copy of powell.JPG")
    (root / "notes.jpg").write_text("not a photo\n")
    (root / "readme.txt").write_text("ignored: not an image name\n")
    (root / ".hidden.jpg").write_bytes(b"skipped")
    (root / ".cache").mkdir()
    shutil.copy(photo(lfw, "Hugo_Chavez", 3), root / ".cache")
    return root


@pytest.fixture(scope="module")
def grouped(home, folder):
    """``enroll cluster --json`` on the album, once for the module: (its JSON, its stderr lines)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["cluster", str(folder), "--min-size", "1", "--json", "--home", str(home)])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue()), err.getvalue().splitlines()


def test_every_face_is_listed_once_and_copies_are_together(grouped):
    r, err = grouped
    sources = [p["source"] for p in r["photos"]]
    assert sources == sorted(sources) and len(sources) == 8  # hidden files/folders and readme.txt skipped
    assert not [p for p in r["photos"] if not p["accepted"] and p["source"] != "notes.jpg"]
    members = [m for g in r["groups"] for m in g["members"]] + r["ungrouped"]
    assert sorted(members) == sorted(p["source"] for p in r["photos"] if p["accepted"]) and r["faces"] == 7
    assert [g["id"] for g in r["groups"]] == list(range(1, len(r["groups"]) + 1)) and not r["ungrouped"]
    assert [g["size"] for g in r["groups"]] == sorted((g["size"] for g in r["groups"]), reverse=True)
    together = [g for g in r["groups"] if "copy of powell.JPG" in g["members"]]
    assert len(together) == 1 and "Colin_Powell/Colin_Powell_0001.jpg" in together[0]["members"]
    blair = next(p for p in r["photos"] if p["source"] == "trip/day 2/Tony_Blair_0001.jpg")
    assert "largest was kept" in blair["reason"]
    assert any("several faces" in line and "only the largest" in line for line in err)
    assert r["method"] == "chinese_whispers" and r["threshold"] > 0 and r["model_version"] == 1
    assert "enrolled" not in r


def test_text_output_and_the_other_methods(home, folder, capsys):
    before = state(home)
    code, out, _ = enroll(capsys, "cluster", str(folder), "--method", "agglomerative", "--min-size", "3", home=home)
    assert code == 0
    lines = out.splitlines()
    assert "rejected  notes.jpg: not an image (unrecognised format)" in lines
    assert lines[-1].startswith("8 photos, 7 faces,") and "agglomerative [scikit-learn] at τ" in lines[-1]
    assert any(line.startswith("group 1: ") for line in lines) or any(line.startswith("ungrouped") for line in lines)
    code, r, _ = run_json(capsys, "cluster", str(folder), "--method", "dbscan", "--min-size", "3", home=home)
    assert code == 0 and all(g["size"] >= 3 for g in r["groups"]) and r["method"] == "dbscan"
    assert sum(g["size"] for g in r["groups"]) + len(r["ungrouped"]) == 7
    assert state(home) == before  # without --enroll-as nothing is stored


def test_enroll_as_enrols_each_group_through_add_person(home, folder, grouped, capsys):
    code, r, err = run_json(capsys, "cluster", str(folder), "--min-size", "2", "--enroll-as", "album", home=home)
    assert code == 0, err
    big = [g for g in r["groups"] if g["size"] >= 2]
    assert big and len(r["enrolled"]) == len(big) == len(r["groups"])
    with SqliteGallery(home) as gallery:
        for group, report in zip(r["groups"], r["enrolled"]):
            assert group["enrolled_as"] == report["name"] == f"album-{group['id']}"
            person = gallery.get(report["name"])
            # The copy of Powell's photo is the same crop: add-person refuses it, as it always does.
            assert 1 <= len(person.faces) == report["faces_added"] <= group["size"]
            assert report["held_out"] is None or len(person.faces) >= 2
    before = state(home)
    code, _, err = enroll(capsys, "cluster", str(folder), "--enroll-as", "album", home=home)
    assert code == 1 and len(err) == 1 and "'album-1' is already enrolled" in err[0], err
    assert state(home) == before


@pytest.mark.parametrize("case", ["missing", "empty", "no_faces", "min_size", "slash", "empty_prefix", "too_long",
                                  "bad_policy"])
def test_bad_input_is_one_error_line_and_stores_nothing(case, home, folder, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    (tmp_path / "blank").mkdir()
    Image.new("RGB", (200, 200), "gray").save(tmp_path / "blank" / "wall.png")
    argv, message = {
        "missing": ([str(tmp_path / "nope")], "not a folder"),
        "empty": ([str(tmp_path / "empty")], "no photos under"),
        "no_faces": ([str(tmp_path / "blank"), "--enroll-as", "x"], "no face found in any of the 1 photos"),
        "min_size": ([str(folder), "--min-size", "0"], "--min-size must be at least 1"),
        "slash": ([str(folder), "--enroll-as", "a/b"], "path separators"),
        "empty_prefix": ([str(folder), "--enroll-as", ""], "name is empty"),
        "too_long": ([str(folder), "--enroll-as", "x" * 99], "makes no valid name"),
        "bad_policy": ([str(folder)], "setting 'cluster_method'"),
    }[case]
    policy = home / "enroll.yaml"
    saved = policy.read_text()
    if case == "bad_policy":
        policy.write_text(saved + "cluster_method: kmeans\n")
    before = state(home)
    try:
        code, out, err = enroll(capsys, "cluster", *argv, home=home)
    finally:
        policy.write_text(saved)
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], (out, err)
    assert state(home) == before
    if case == "empty":
        code, r, _ = run_json(capsys, "cluster", *argv, home=home)
        assert code == 1 and r["error"].startswith("no photos under")


def test_the_experiments_pairwise_scores_and_per_person_cap():
    from experiments.clustering import first_per_identity, pairwise_scores

    truth = ["a", "a", "a", "b", "b", "c"]
    assert pairwise_scores(truth, [5, 5, 5, 1, 1, 0]) == (1.0, 1.0, 1.0)  # label values do not matter
    precision, recall, _ = pairwise_scores(truth, [0] * 6)  # one big group: 4 of its 15 pairs are right
    assert recall == 1.0 and precision == pytest.approx(4 / 15)
    precision, recall, f = pairwise_scores(truth, list(range(6)))  # all apart: no pair is found
    assert (precision, recall, f) == (1.0, 0.0, 0.0)
    assert first_per_identity(["b", "a", "a", "a"], ["1", "3", "1", "2"], 2) == [2, 3, 0]
    assert first_per_identity(["b", "a"], ["1", "1"], 0) == [1, 0]
