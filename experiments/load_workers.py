"""The worker processes of the enrolment load test (``python -m experiments.load_enroll``).

Each worker is a spawned process that calls the ``enroll`` entry point in-process, again and again
(``enroll.cli.main([...])``, stdout and stderr captured), so only its first call pays the TensorFlow
import. An adder enrols made-up people, one photo each; an identifier asks who is in photos of people
already enrolled (and now and then a stranger's), then checks the new people once the load is over.
Each puts its record (a dict, the JSON report's per-worker row) on the ``results`` queue.

Module top level imports only the standard library: every spawned worker imports this module (and
the one that started it) before it runs, and TensorFlow is imported inside the worker, once.
"""
from __future__ import annotations

import contextlib
import io
import json
import random
import re
import time
import traceback

STRANGER_SHARE = 0.1  # share of identify calls that ask about a stranger
NO_FACE = re.compile(r"no face found\)?$")  # add-person: "...(x.jpg: no face found)"; identify: "x.jpg: no face found"


def _call(cli, argv: list[str]) -> dict:
    """One `enroll` command in this process, as a script would see it: exit code, JSON, error line."""
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    seconds = time.perf_counter() - started
    try:
        answer = json.loads(out.getvalue())
    except ValueError:
        answer = None
    if code == 0 and isinstance(answer, dict):
        return {"outcome": "ok", "seconds": seconds, "answer": answer, "message": ""}
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    message = next((line for line in lines if line.startswith("error:")), " | ".join(lines)[:300] or f"exit {code}")
    outcome = "no_face" if code == 1 and NO_FACE.search(message) else "error"
    return {"outcome": outcome, "seconds": seconds, "answer": answer, "message": f"exit {code}: {message}"}


def _nearest(result: dict) -> str | None:
    """The nearest enrolled person of an identify answer (whatever τ says), None if there is none."""
    candidates = result["answer"]["candidates"] if result["outcome"] == "ok" else []
    return candidates[0]["name"] if candidates else None


def _warm_up(cli, home: str, photos: list[str]) -> None:
    """Load TensorFlow, the production model and the detector, and trace the model once, with a
    read-only identify, so that the timed window measures operations, not process start-up."""
    for photo in photos:
        result = _call(cli, ["identify", photo, "--json", "--home", home])
        if result["outcome"] == "ok":
            return
    raise RuntimeError(f"warm-up: no identify succeeded on {len(photos)} photos; last: {result['message']}")


class _Log:
    """One worker's record: counts, latencies, error lines, first release and last finish."""

    def __init__(self, worker: str, kind: str):
        self.summary = {"worker": worker, "kind": kind, "ok": 0, "no_face": 0, "errors": [], "latencies": [],
                        "released": 0.0, "finished": 0.0}

    def add(self, result: dict, counter) -> None:
        s = self.summary
        s["latencies"].append(result["seconds"])
        if result["outcome"] == "error":
            s["errors"].append(result["message"])
        else:
            s[result["outcome"]] += 1
        s["finished"] = time.monotonic()
        with counter.get_lock():
            counter.value += 1


def adder(i, home, photos, tag, seconds, warm_photos, barrier, enrolled, counter, results):
    log = _Log(f"a{i}", "add-person")
    try:
        from enroll import cli

        _warm_up(cli, home, warm_photos)
        barrier.wait()
        log.summary["released"] = started = time.monotonic()
        log.summary["enrolled"] = []
        for n, photo in enumerate(photos):
            if time.monotonic() - started >= seconds:
                break
            name = f"load-{tag}-a{i}-{n:05d}"  # unique: run tag, adder, position in its own photo list
            result = _call(cli, ["add-person", name, photo, "--allow-several-faces", "--json", "--home", home])
            log.add(result, counter)
            if result["outcome"] == "ok":
                log.summary["enrolled"].append((name, photo))
                enrolled.append((name, photo))  # identifiers may ask about them from now on
        log.summary["photos_left"] = len(photos) - len(log.summary["latencies"])
    except BaseException:  # noqa: BLE001 - reported to the parent as a crash, which fails the run
        log.summary["crash"] = traceback.format_exc()
    results.put(log.summary)


def identifier(i, home, strangers, seconds, warm_photos, barrier, enrolled, counter, results, to_verify):
    log = _Log(f"i{i}", "identify")
    log.summary["wrong"] = []  # an enrolled person's own photo answered with someone else
    rng = random.Random(i)
    try:
        from enroll import cli

        _warm_up(cli, home, warm_photos)
        barrier.wait()
        log.summary["released"] = started = time.monotonic()
        while time.monotonic() - started < seconds:
            size = len(enrolled)
            name, photo = enrolled[rng.randrange(size)] if size and rng.random() >= STRANGER_SHARE else \
                (None, rng.choice(strangers))
            result = _call(cli, ["identify", photo, "--json", "--home", home])
            log.add(result, counter)
            if name and result["outcome"] == "ok" and _nearest(result) != name:
                log.summary["wrong"].append(f"{name}: {photo} answered {_nearest(result)}")
        results.put(log.summary)
        # After the load: the parent hands out every new person to check, these processes being warm.
        checked = []
        for name, photo in iter(lambda: to_verify.get(timeout=900), None):
            result = _call(cli, ["identify", photo, "--json", "--home", home])
            checked.append({"name": name, "photo": photo, "nearest": _nearest(result), "message": result["message"]})
        results.put({"worker": f"i{i}", "kind": "verify", "checked": checked})
    except BaseException:  # noqa: BLE001
        results.put({**log.summary, "crash": traceback.format_exc()})
