"""Crash safety: an enrolment process killed with SIGKILL at any moment leaves no half person.

A child process enrols (4 faces, vectors of two model versions) and removes people in a loop and
is killed at random moments; two more children kill themselves at the two delicate points, after
writing crops but before the commit, and after a removal's commit but before its crops are gone.
After each kill the gallery is reopened (which recovers) and every invariant is checked.
"""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from enroll.store import SqliteGallery

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from enroll.store import SqliteGallery

    home, seed, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = np.random.default_rng(seed)
    g = SqliteGallery(home)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def enrol(name):
        faces = [(rng.bytes(20000), f"{name}-{j}.jpg") for j in range(4)]
        g.add_person(name, faces, {1: rng.normal(size=(4, 128)), 2: rng.normal(size=(4, 128))})

    if mode == "after-crops":  # crops on disk, transaction not committed
        write, written = g.crops.write, []
        def write_then_die(data):
            written.append(write(data))
            if len(written) == 3:
                die()
            return written[-1]
        g.crops.write = write_then_die
        enrol("half-written")
    elif mode == "after-remove-commit":  # rows gone, crop files not yet deleted
        enrol("victim")
        print("enrolled", flush=True)
        resolve, calls = g.crops.resolve_pending, []
        def resolve_or_die(referenced):
            calls.append(1)
            if len(calls) == 2:
                die()
            return resolve(referenced)
        g.crops.resolve_pending = resolve_or_die
        g.remove_person("victim")
    else:
        print("started", flush=True)
        for i in range(10**6):
            enrol(f"p{seed}-{i}")
            if i % 3 == 2:
                g.remove_person(f"p{seed}-{i - 1}")
""")


def spawn(home, seed, mode):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(home), str(seed), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_consistent(home):
    g = SqliteGallery(home)  # reopening recovers what a killed writer left behind
    try:
        assert g.check_consistency(model_version=1) == []
        assert g.check_consistency(model_version=2) == []
        people = g.list_people()
        assert all(k == 4 for _, k in people), people  # a person is all of their faces or absent
        assert len(g.embeddings(1)[0]) == len(g.embeddings(2)[0]) == 4 * len(people)
        return people
    finally:
        g.close()


def test_sigkill_at_random_moments_leaves_gallery_consistent(tmp_path):
    home, rng = tmp_path / "home", random.Random(0)
    enrolled = 0
    for attempt in range(8):
        child = spawn(home, attempt, "loop")
        assert child.stdout.readline().strip() == "started", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.5))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert child.returncode == -signal.SIGKILL, child.stderr.read()
        child.stdout.close()
        child.stderr.close()
        enrolled = len(assert_consistent(home))
    assert enrolled > 0  # the loop did get work done between kills


@pytest.mark.parametrize("mode", ["after-crops", "after-remove-commit"])
def test_sigkill_at_the_delicate_points(tmp_path, mode):
    home = tmp_path / "home"
    child = spawn(home, 0, mode)
    _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    crops_before_recovery = list((home / "crops").rglob("*.png"))
    assert crops_before_recovery  # the kill did leave crops that no committed row names
    assert assert_consistent(home) == []
    assert list((home / "crops").rglob("*")) == [p for p in (home / "crops").iterdir() if p.is_dir()]
