"""The enrolment load test, run as a user runs it: 8 `enroll add-person` and 8 `enroll identify`
processes against one gallery for a bounded time (experiments/load_enroll.py), then no lost,
duplicated or extra person, a consistent gallery, every new person identifiable, no error.

On 2 cores most of the ~2.5 minutes is the 16 processes importing TensorFlow (~25-50 s) and the
40 s of load; the script's own checks are asserted again here from its JSON.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from enroll.store import SqliteGallery
from tests.test_enroll_cli import home, lfw  # noqa: F401  (module fixtures reused)

REPO = Path(__file__).resolve().parents[1]
SECONDS = 25  # of load; start-up (16 TensorFlow processes on 2 cores) and the after-check come on top


def test_eight_adders_and_eight_identifiers_lose_nothing(home, shared_data, tmp_path):  # noqa: F811
    copy = tmp_path / "home"
    shutil.copytree(home, copy)  # a fresh production home: tiny model, four people enrolled
    with SqliteGallery(copy) as g:
        before = {n for n, _ in g.list_people()}
    out = tmp_path / "load.json"
    result = subprocess.run([sys.executable, "-m", "experiments.load_enroll", "--home", str(copy), "--photos",
                             str(shared_data / "celeba299"), "--seconds", str(SECONDS), "--adders", "8",
                             "--identifiers", "8", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=420)
    print(result.stdout)  # the progress lines and the table, shown when the test fails (or with -s)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    r = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().startswith("8 add-person + 8 identify processes")
    assert all(c["ok"] for c in r["checks"].values()) and r["passed"] and not r["crashes"], r["checks"]

    adds, identifies = r["add_person"], r["identify"]
    assert adds["errors"] == identifies["errors"] == 0, (adds["error_messages"], identifies["error_messages"])
    assert adds["ops_per_s"] > 0 and identifies["ops_per_s"] > 0 and adds["ok"] > 0 and identifies["ok"] > 0
    assert [p["calls"] > 0 for p in adds["per_process"] + identifies["per_process"]] == [True] * 16
    assert adds["calls"] == adds["ok"] + adds["no_face"] and SECONDS <= r["window_s"] < SECONDS + 30

    # Independently of the script: exactly the people it reported, each once with one face.
    with SqliteGallery(copy) as g:
        people = dict(g.list_people())
        assert g.check_consistency(model_version=int((copy / "PRODUCTION").read_text())) == []
        assert not g.jobs()
    new = set(people) - before
    assert before <= set(people) and new == set(r["enrolled_people"])
    assert len(new) == len(r["enrolled_people"]) == adds["ok"] == r["people_after"] - r["people_before"]
    assert all(people[name] == 1 for name in new) and all(name.startswith("load-") for name in new)
