"""Load test: concurrent `enroll add-person` and `enroll identify` processes against one gallery.

    python -m experiments.load_enroll --home HOME --photos DIR --seconds 60 [--adders 8 --identifiers 8]
                                      [--out experiments/results/load_enroll.json]

Each adder is its own OS process that calls the `enroll` entry point in-process, stdout and stderr
captured, again and again (``enroll.cli.main(["add-person", NAME, PHOTO, "--allow-several-faces",
"--json", "--home", HOME])``), so only its first call pays the TensorFlow import; every made-up
person ``load-<tag>-a<adder>-<n>`` gets one photo no other person gets. Each identifier loops
``enroll identify PHOTO --json`` the same way on photos of people already enrolled (and now and
then a stranger). All processes load the model and detector first (a read-only identify), then
start together at a barrier and stop at the deadline.

Afterwards: the people in the gallery are exactly those before plus those add-person reported (none
lost, duplicated or extra, one face each), ``check_consistency`` finds nothing, no retraining job
was submitted, and every new person's enrolment photo identifies them (nearest candidate: a photo's
own embedding is at distance ~0, whatever the model's accuracy). Writes JSON (+ a .md table beside
it), prints the table, exits 1 if a check fails (2 if it cannot start).

It enrols hundreds of made-up people (listed in the JSON as ``enrolled_people``): point it at a
copy of a production home (cp -a) unless you want them in your gallery. It refuses a home whose
enroll.yaml sets ``retrain_after_changes``, as the enrolments would submit a real retraining. A
photo without a face is a correct refusal ("no_face"), not an error; --allow-several-faces keeps
the largest face of group photos, as one enrols from real photos, so that they are no refusal.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import platform
import queue
import random
import re
import sys
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRANGERS = 40  # photos no adder enrols: identify must also answer for people not in the gallery
STRANGER_SHARE = 0.1  # share of identify calls that ask about a stranger
NO_FACE = re.compile(r"no face found\)?$")  # add-person: "...(x.jpg: no face found)"; identify: "x.jpg: no face found"


# ------------------------------------------------------------------------------------ workers
# Module top level imports only the standard library: every spawned worker re-imports this file.
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


# ------------------------------------------------------------------------------------- parent
def photo_pool(root: Path) -> list[str]:
    """Every photo under ``root``, one per distinct content (two people must never share a crop),
    in a fixed shuffled order so that adders get photos of many identities."""
    seen, pool = set(), []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        digest = hashlib.sha256(path.read_bytes()).digest()
        if digest not in seen:
            seen.add(digest)
            pool.append(str(path))
    random.Random(0).shuffle(pool)
    return pool


def gallery_state(home: Path) -> dict:
    from enroll.models import production_version
    from enroll.store import SqliteGallery

    with SqliteGallery(home) as g:
        return {"people": dict(g.list_people()), "jobs": len(g.jobs()), "production": production_version(home)}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def kind_summary(logs: list[dict], window: float) -> dict:
    latencies = [x for s in logs for x in s["latencies"]]
    per_process = [{"worker": s["worker"], "calls": len(s["latencies"]), "ok": s["ok"], "no_face": s["no_face"],
                    "errors": len(s["errors"]),
                    "ops_per_s": len(s["latencies"]) / max(s["finished"] - s["released"], 1e-9) if s["latencies"] else 0.0}
                   for s in logs]
    errors: dict[str, int] = {}
    for s in logs:
        for message in s["errors"]:
            errors[message] = errors.get(message, 0) + 1
    return {"processes": len(logs), "calls": len(latencies), "ok": sum(s["ok"] for s in logs),
            "no_face": sum(s["no_face"] for s in logs), "errors": sum(errors.values()),
            "error_messages": [{"message": m, "count": n} for m, n in sorted(errors.items(), key=lambda e: -e[1])],
            "ops_per_s": len(latencies) / window if window else 0.0,
            "ok_per_s": sum(s["ok"] for s in logs) / window if window else 0.0,
            "ops_per_s_per_process_mean": sum(p["ops_per_s"] for p in per_process) / max(len(per_process), 1),
            "p50_ms": 1000 * percentile(latencies, 50) if latencies else None,
            "p95_ms": 1000 * percentile(latencies, 95) if latencies else None,
            "per_process": per_process}


def table(r: dict) -> str:
    ms = lambda v: f"{v:.0f} ms" if v is not None else "-"  # noqa: E731
    lines = [f"{r['adders']} add-person + {r['identifiers']} identify processes, {r['seconds']:g} s, "
             f"{r['machine']}; model {r['model']}; gallery {r['people_before']} -> {r['people_after']} people", "",
             "| operation | processes | calls | ok | no face | errors | ops/s (all) | ops/s per process | p50 | p95 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in ("add_person", "identify"):
        k = r[kind]
        lines.append(f"| {kind.replace('_', '-')} | {k['processes']} | {k['calls']} | {k['ok']} | {k['no_face']} | "
                     f"{k['errors']} | {k['ops_per_s']:.1f} | {k['ops_per_s_per_process_mean']:.2f} | "
                     f"{ms(k['p50_ms'])} | {ms(k['p95_ms'])} |")
    lines += ["", f"start-up of {r['adders'] + r['identifiers']} processes (import, model, detector, first call): "
                  f"{r['startup_s']:.1f} s; load window {r['window_s']:.1f} s; after-check of "
                  f"{r['add_person']['ok']} people {r['verify_s']:.1f} s; machine load average (1 min) "
                  f"{r['load_average_1min']['before']:.1f} before, {r['load_average_1min']['after_load']:.1f} "
                  "at the end of the load", "", "| check | result |", "| --- | --- |"]
    lines += [f"| {name} | {'pass' if c['ok'] else 'FAIL: ' + c['detail']} |" for name, c in r["checks"].items()]
    return "\n".join(lines)


def collect(results, procs: dict, progress=None) -> list[dict]:
    """One report from each worker in ``procs`` (name -> process); one that died without a report
    is given up on rather than waited for."""
    got, waiting = [], dict(procs)
    while waiting:
        try:
            report = results.get(timeout=2)
        except queue.Empty:
            if progress:
                progress()
            if all(p.exitcode is not None for p in waiting.values()):
                return got + drain(results)  # a report may have landed just before the exit
            continue
        got.append(report)
        waiting.pop(report["worker"], None)
    return got


def drain(results) -> list[dict]:
    got = []
    with contextlib.suppress(queue.Empty):
        while True:
            got.append(results.get(timeout=1))
    return got


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=os.environ.get("FACENET_HOME"), help="production home ($FACENET_HOME)")
    parser.add_argument("--photos", required=True, help="folder of photos (searched recursively); one per new person")
    parser.add_argument("--seconds", type=float, default=60, help="length of the load window")
    parser.add_argument("--adders", type=int, default=8)
    parser.add_argument("--identifiers", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "experiments/results/load_enroll.json"))
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds all processes may take to warm up")
    args = parser.parse_args(argv)

    from enroll.gallery import GalleryError
    from enroll.models import production_meta, resolve_home
    from enroll.settings import load_settings

    home = resolve_home(args.home)
    try:
        version, meta = production_meta(home)
        every = load_settings(home).retrain_after_changes
    except GalleryError as exc:  # no production model, or a bad enroll.yaml
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if every:  # hundreds of add-person calls would submit a real retraining (and promote a model)
        print(f"error: {home / 'enroll.yaml'} sets retrain_after_changes: {every}; run the load test on a copy of "
              "the home with it at 0 (retraining on demand only)", file=sys.stderr)
        return 2
    pool = photo_pool(Path(args.photos))
    if len(pool) < STRANGERS + args.adders:
        print(f"error: {len(pool)} distinct photos under {args.photos}; need more than {STRANGERS + args.adders}",
              file=sys.stderr)
        return 2
    strangers, to_enrol = pool[:STRANGERS], pool[STRANGERS:]
    before = gallery_state(home)
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: record it
    tag = uuid.uuid4().hex[:6]
    print(f"{len(to_enrol)} photos for {args.adders} adders, {len(strangers)} strangers; home {home} "
          f"(model version {version}, {len(before['people'])} people); starting {args.adders + args.identifiers} "
          "processes", flush=True)

    ctx = mp.get_context("spawn")  # TensorFlow must never be forked
    n = args.adders + args.identifiers
    with ctx.Manager() as manager:
        enrolled = manager.list()  # (name, photo) of every person enrolled so far, for the identifiers
        barrier, results, to_verify = ctx.Barrier(n + 1), ctx.Queue(), ctx.Queue()
        adds, identifies = ctx.Value("l", 0), ctx.Value("l", 0)
        procs = {f"a{i}": ctx.Process(target=adder, daemon=True, args=(
            i, str(home), to_enrol[i::args.adders], tag, args.seconds, strangers, barrier, enrolled, adds, results))
            for i in range(args.adders)}
        procs |= {f"i{i}": ctx.Process(target=identifier, daemon=True, args=(
            i, str(home), strangers, args.seconds, strangers, barrier, enrolled, identifies, results, to_verify))
            for i in range(args.identifiers)}
        spawned = time.monotonic()
        for p in procs.values():
            p.start()
        # Wait for every worker to be warm and at the barrier, giving up at once if one dies.
        while barrier.n_waiting < n:
            if any(p.exitcode is not None for p in procs.values()) or time.monotonic() - spawned > args.startup_timeout:
                crashes = [r["crash"] for r in drain(results) if r.get("crash")]
                for p in procs.values():
                    p.terminate()
                print(f"error: not all {n} workers started within {time.monotonic() - spawned:.0f} s"
                      + (f"; first crash:\n{crashes[0]}" if crashes else ""), file=sys.stderr)
                return 2
            time.sleep(0.2)
        barrier.wait()
        released = time.monotonic()
        print(f"all {n} processes warm after {released - spawned:.1f} s; load for {args.seconds:g} s", flush=True)

        shown = [released]

        def progress():
            if time.monotonic() - shown[0] >= 10:
                shown[0] = time.monotonic()
                print(f"  [{shown[0] - released:4.0f} s] add-person calls {adds.value}, identify calls "
                      f"{identifies.value}", flush=True)

        logs = collect(results, procs, progress)
        load_after = os.getloadavg()[0]
        adder_logs = [r for r in logs if r["kind"] == "add-person"]
        identify_logs = [r for r in logs if r["kind"] == "identify"]
        new_people = [pair for r in adder_logs for pair in r.get("enrolled", [])]
        reported = [name for name, _ in new_people]
        print(f"load over: {len(reported)} people enrolled; checking that each is identifiable", flush=True)
        verify_started = time.monotonic()
        for pair in new_people:
            to_verify.put(pair)
        for _ in range(args.identifiers):
            to_verify.put(None)
        verify_logs = collect(results, {w: p for w, p in procs.items() if w.startswith("i")})
        checked = [c for r in verify_logs for c in r.get("checked", [])]
        verify_s = time.monotonic() - verify_started
        for p in procs.values():
            p.join(30)
        crashes = [f"{r['worker']}: {r['crash']}" for r in logs + verify_logs if r.get("crash")]

    after = gallery_state(home)
    from enroll.store import SqliteGallery

    with SqliteGallery(home) as g:
        problems = g.check_consistency(model_version=after["production"])
    window = max((s["finished"] for s in logs if s.get("finished")), default=released) - released
    new = set(after["people"]) - set(before["people"])
    lost, extra = set(reported) - new, new - set(reported)
    duplicated = sorted({x for x, k in Counter(reported).items() if k > 1} |
                        {name for name in new if after["people"][name] != 1})
    unidentified = [c for c in checked if c["nearest"] != c["name"]]
    wrong = [w for s in identify_logs for w in s.get("wrong", [])]
    check = lambda ok, detail: {"ok": bool(ok), "detail": "" if ok else detail}  # noqa: E731
    checks = {
        "all processes ran to the end": check(not crashes and len(logs) == n and len(verify_logs) == args.identifiers,
                                              "; ".join(c.splitlines()[-1] for c in crashes) or f"{len(logs)}/{n} reported"),
        "no add-person or identify error": check(not any(s["errors"] for s in logs),
                                                 "; ".join(m for s in logs for m in s["errors"][:3])[:500]),
        "people after == before + reported, each once with one face": check(
            not lost and not extra and not duplicated and set(before["people"]) <= set(after["people"]),
            f"lost {sorted(lost)[:5]}, extra {sorted(extra)[:5]}, duplicated {duplicated[:5]}"),
        "check_consistency(production version) == []": check(not problems, "; ".join(problems[:5])),
        "every new person identifiable after the load": check(
            len(checked) == len(new_people) and not unidentified,
            f"{len(checked)}/{len(new_people)} checked, wrong: {unidentified[:3]}"),
        "identify during the load named each enrolled person asked about": check(not wrong, "; ".join(wrong[:3])),
        "no retraining submitted, production model unchanged": check(
            after["jobs"] == before["jobs"] and after["production"] == before["production"],
            f"jobs {before['jobs']} -> {after['jobs']}, production {before['production']} -> {after['production']}"),
    }
    results = {"home": str(home), "photos": str(args.photos), "seconds": args.seconds, "adders": args.adders,
               "identifiers": args.identifiers, "model": f"{meta['model_name']} ({meta['image_size']} px), version {version}",
               "machine": f"{os.cpu_count()} CPUs ({platform.machine()})",
               "load_average_1min": {"before": load_before, "after_load": load_after}, "command": " ".join(["python", *sys.argv]),
               "startup_s": released - spawned, "window_s": window, "verify_s": verify_s,
               "people_before": len(before["people"]), "people_after": len(after["people"]),
               "add_person": kind_summary(adder_logs, window), "identify": kind_summary(identify_logs, window),
               "identify_stranger_share": STRANGER_SHARE, "checks": checks, "passed": all(c["ok"] for c in checks.values()),
               "enrolled_people": sorted(reported),  # e.g. to remove them again: enroll remove-person NAME
               "adders_out_of_photos": [r["worker"] for r in adder_logs if r.get("photos_left") == 0],
               "crashes": crashes}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    out.with_suffix(".md").write_text(table(results) + "\n")
    print(table(results))
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
