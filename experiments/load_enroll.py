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

The workers are in ``experiments.load_workers``, the checks and the table in ``experiments.load_report``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import platform
import queue
import random
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# Top-level imports are the standard library only, here and in these two modules: every spawned
# worker imports them before it starts (TensorFlow comes later, inside the worker).
from experiments.load_report import GalleryState, LoadRun, kind_summary, load_checks, table
from experiments.load_workers import STRANGER_SHARE, adder, identifier

REPO = Path(__file__).resolve().parents[1]
STRANGERS = 40  # photos no adder enrols: identify must also answer for people not in the gallery


class Refused(Exception):
    """The load test cannot start (exit 2): no production model, a home that would retrain, too few photos."""


@dataclass
class LoadSetup:
    home: Path
    version: int
    meta: dict  # the production model's metadata (enroll.model_versions.production_meta)
    strangers: list[str]  # photos no adder enrols
    to_enrol: list[str]  # photos the adders share out, one per new person
    before: GalleryState
    load_before: float  # the machine's 1-minute load average: other work skews every figure
    tag: str  # in every made-up name, so that two runs never collide


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


def gallery_state(home: Path) -> GalleryState:
    from enroll.model_versions import production_version
    from enroll.backends import open_gallery

    with open_gallery(home, create=True) as g:
        return GalleryState(people=dict(g.list_people()), jobs=len(g.jobs()), production=production_version(home))


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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=os.environ.get("FACENET_HOME"), help="production home ($FACENET_HOME)")
    parser.add_argument("--photos", required=True, help="folder of photos (searched recursively); one per new person")
    parser.add_argument("--seconds", type=float, default=60, help="length of the load window")
    parser.add_argument("--adders", type=int, default=8)
    parser.add_argument("--identifiers", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "experiments/results/load_enroll.json"))
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds all processes may take to warm up")
    return parser.parse_args(argv)


def set_up(args) -> LoadSetup:
    """The production home and the photos, refused before any process starts."""
    from enroll.gallery import GalleryError
    from enroll.home import resolve_home, settings_file
    from enroll.model_versions import production_meta
    from enroll.settings import load_settings

    home = resolve_home(args.home)
    try:
        version, meta = production_meta(home)
        every = load_settings(home).retrain_after_changes
    except GalleryError as exc:  # no production model, or a bad enroll.yaml
        raise Refused(str(exc)) from None
    if every:  # hundreds of add-person calls would submit a real retraining (and promote a model)
        raise Refused(f"{settings_file(home)} sets retrain_after_changes: {every}; run the load test on a copy of "
                      "the home with it at 0 (retraining on demand only)")
    pool = photo_pool(Path(args.photos))
    if len(pool) < STRANGERS + args.adders:
        raise Refused(f"{len(pool)} distinct photos under {args.photos}; need more than {STRANGERS + args.adders}")
    return LoadSetup(home=home, version=version, meta=meta, strangers=pool[:STRANGERS], to_enrol=pool[STRANGERS:],
                     before=gallery_state(home), load_before=os.getloadavg()[0], tag=uuid.uuid4().hex[:6])


def run_load(args, setup: LoadSetup) -> LoadRun:
    """Start the workers, release them together once all are warm, collect their records at the
    deadline, then have the (warm) identifiers check every new person."""
    ctx = mp.get_context("spawn")  # TensorFlow must never be forked
    n = args.adders + args.identifiers
    home, strangers, to_enrol = str(setup.home), setup.strangers, setup.to_enrol
    with ctx.Manager() as manager:
        enrolled = manager.list()  # (name, photo) of every person enrolled so far, for the identifiers
        barrier, results, to_verify = ctx.Barrier(n + 1), ctx.Queue(), ctx.Queue()
        adds, identifies = ctx.Value("l", 0), ctx.Value("l", 0)
        procs = {f"a{i}": ctx.Process(target=adder, daemon=True, args=(
            i, home, to_enrol[i::args.adders], setup.tag, args.seconds, strangers, barrier, enrolled, adds, results))
            for i in range(args.adders)}
        procs |= {f"i{i}": ctx.Process(target=identifier, daemon=True, args=(
            i, home, strangers, args.seconds, strangers, barrier, enrolled, identifies, results, to_verify))
            for i in range(args.identifiers)}
        spawned = time.monotonic()
        for p in procs.values():
            p.start()
        _wait_until_warm(barrier, procs, results, spawned, args.startup_timeout)
        barrier.wait()
        released = time.monotonic()
        print(f"all {n} processes warm after {released - spawned:.1f} s; load for {args.seconds:g} s", flush=True)
        logs = collect(results, procs, _progress_printer(released, adds, identifies))
        load_after = os.getloadavg()[0]
        run = LoadRun(spawned=spawned, released=released, logs=logs, verify_logs=[], verify_s=0.0,
                      load_after=load_after, crashes=[])
        print(f"load over: {len(run.reported)} people enrolled; checking that each is identifiable", flush=True)
        verify_started = time.monotonic()
        for pair in run.new_people:
            to_verify.put(pair)
        for _ in range(args.identifiers):
            to_verify.put(None)
        run.verify_logs = collect(results, {w: p for w, p in procs.items() if w.startswith("i")})
        run.verify_s = time.monotonic() - verify_started
        for p in procs.values():
            p.join(30)
        run.crashes = [f"{r['worker']}: {r['crash']}" for r in logs + run.verify_logs if r.get("crash")]
    return run


def _wait_until_warm(barrier, procs: dict, results, spawned: float, timeout: float) -> None:
    """Until every worker is warm and at the barrier; refused at once if one dies."""
    n = len(procs)
    while barrier.n_waiting < n:
        if any(p.exitcode is not None for p in procs.values()) or time.monotonic() - spawned > timeout:
            crashes = [r["crash"] for r in drain(results) if r.get("crash")]
            for p in procs.values():
                p.terminate()
            raise Refused(f"not all {n} workers started within {time.monotonic() - spawned:.0f} s"
                          + (f"; first crash:\n{crashes[0]}" if crashes else ""))
        time.sleep(0.2)


def _progress_printer(released: float, adds, identifies):
    """A progress line every 10 s of the load (collect calls it while it waits)."""
    shown = [released]

    def progress():
        if time.monotonic() - shown[0] >= 10:
            shown[0] = time.monotonic()
            print(f"  [{shown[0] - released:4.0f} s] add-person calls {adds.value}, identify calls "
                  f"{identifies.value}", flush=True)
    return progress


def report(args, setup: LoadSetup, run: LoadRun) -> dict:
    """Check the gallery after the load; the JSON report."""
    from enroll.backends import open_gallery

    after = gallery_state(setup.home)
    with open_gallery(setup.home, create=True) as g:
        problems = g.check_consistency(model_version=after.production)
    checks = load_checks(setup.before, after, problems, run, workers=args.adders + args.identifiers,
                         identifiers=args.identifiers)
    meta, window = setup.meta, run.window
    return {"home": str(setup.home), "photos": str(args.photos), "seconds": args.seconds, "adders": args.adders,
            "identifiers": args.identifiers,
            "model": f"{meta['model_name']} ({meta['image_size']} px), version {setup.version}",
            "machine": f"{os.cpu_count()} CPUs ({platform.machine()})",
            "load_average_1min": {"before": setup.load_before, "after_load": run.load_after},
            "command": " ".join(["python", "-m", "experiments.load_enroll", *sys.argv[1:]]),
            "startup_s": run.released - run.spawned, "window_s": window, "verify_s": run.verify_s,
            "people_before": len(setup.before.people), "people_after": len(after.people),
            "add_person": kind_summary(run.adder_logs, window), "identify": kind_summary(run.identify_logs, window),
            "identify_stranger_share": STRANGER_SHARE, "checks": checks, "passed": all(c["ok"] for c in checks.values()),
            "enrolled_people": sorted(run.reported),  # e.g. to remove them again: enroll remove-person NAME
            "adders_out_of_photos": [r["worker"] for r in run.adder_logs if r.get("photos_left") == 0],
            "crashes": run.crashes}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        setup = set_up(args)
        print(f"{len(setup.to_enrol)} photos for {args.adders} adders, {len(setup.strangers)} strangers; home "
              f"{setup.home} (model version {setup.version}, {len(setup.before.people)} people); starting "
              f"{args.adders + args.identifiers} processes", flush=True)
        run = run_load(args, setup)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = report(args, setup, run)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    out.with_suffix(".md").write_text(table(results) + "\n")
    print(table(results))
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
