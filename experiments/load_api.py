"""Load over HTTP: enrolling and identifying clients against ``enroll serve`` processes.

    python -m experiments.load_api --home HOME --photos ../shared/data/celeba299 [--photos DIR ...]
        [--backend postgres|sqlite] [--api-processes 2] [--enrollers 8] [--identifiers 8] [--seconds 60]
        [--database-url postgresql://...] [--out experiments/results/load_api_<backend>.json]

HOME is a production home whose model the API serves (e.g. ``enroll init --run runs/s13-distill-40ep
--home .facenet/s13``); the run uses a fresh copy of its model and never touches its gallery
(experiments/api_deployment.py). PostgreSQL: a throw-away server started as the tests start one,
or the empty database at --database-url; 2 API processes by default, each its own uvicorn on its
own port. SQLite: 1 API process. Photos: identity folders (``<dir>/<person>/<photo>.jpg``) with
at least two photos; each enrolled person is one identity, enrolled from its first photo under a
made-up name; identifiers ask about that person's other photos (experiments/load_api_clients.py).

Afterwards the database is checked against what the clients were told (experiments/load_api_report.py):
none lost, extra or duplicated, a consistent gallery, identify naming only enrolled people and an
enrolment photo its own person, every new person identifiable through another process; p50 and
p99 per endpoint. Writes JSON and a Markdown table (experiments/results_file.py); exits 1 if a
check fails, 2 if it cannot start.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import sys
import time
import uuid
from pathlib import Path

from experiments import results_file
from experiments.api_deployment import BACKENDS, DeploymentError, api_deployment
from experiments.load_api_clients import Identity, after_check, run_clients
from experiments.load_api_report import LoadApiRun, answer_counts, checks, table
from experiments.load_report import GalleryState, kind_summary

REPO = Path(__file__).resolve().parents[1]
IMAGES = (".jpg", ".jpeg", ".png")


def identities(roots: list[Path], tag: str, query_photos: int = 3) -> list[Identity]:
    """Every identity folder with two or more distinct photos, in a fixed shuffled order; a photo
    whose content another identity already has is skipped (two people must never share a crop)."""
    seen, found = set(), []
    for root in roots:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            photos = []
            for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGES):
                digest = hashlib.sha256(path.read_bytes()).digest()
                if digest not in seen:
                    seen.add(digest)
                    photos.append(path)
            if len(photos) >= 2:
                found.append(Identity(f"load-{tag}-{root.name}-{folder.name}", photos[0],
                                      tuple(photos[1:1 + query_photos])))
    random.Random(0).shuffle(found)
    return found


def gallery_state(deployment) -> GalleryState:
    from enroll.model_versions import production_version

    with deployment.gallery() as g:
        return GalleryState(people=dict(g.list_people()), jobs=len(g.jobs()),
                            production=production_version(deployment.home))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=os.environ.get("FACENET_HOME"), help="production home ($FACENET_HOME)")
    parser.add_argument("--photos", action="append", required=True, help="identity folders (repeatable)")
    parser.add_argument("--backend", choices=BACKENDS, default="postgres")
    parser.add_argument("--api-processes", type=int, help="API processes (default: 2 for postgres, 1 for sqlite)")
    parser.add_argument("--database-url", help="an empty PostgreSQL database instead of a server started here")
    parser.add_argument("--enrollers", type=int, default=8)
    parser.add_argument("--identifiers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--strangers", type=int, default=20, help="identities nobody enrols, asked about now and then")
    parser.add_argument("--out", help="JSON result (default experiments/results/load_api_<backend>.json)")
    args = parser.parse_args(argv)
    args.api_processes = args.api_processes or (2 if args.backend == "postgres" else 1)
    args.out = Path(args.out or REPO / f"experiments/results/load_api_{args.backend}.json")
    args.argv = sys.argv[1:] if argv is None else list(argv)  # the command that reproduces the result
    return args


def run(args, pool: list[Identity]) -> dict:
    started = time.monotonic()
    with api_deployment(Path(args.home), args.backend, args.api_processes, args.database_url) as d:
        return measure(args, d, pool, startup=time.monotonic() - started)


def measure(args, d, pool: list[Identity], startup: float = 0.0) -> dict:
    """The load on a running deployment ``d`` (api_deployment), then its checks: the JSON result."""
    from enroll.model_versions import production_meta

    before, load_before = gallery_state(d), os.getloadavg()[0]
    print(f"{args.api_processes} API process(es) over {args.backend} ready after {startup:.1f} s; "
          f"{args.enrollers} + {args.identifiers} clients for {args.seconds:g} s", flush=True)
    records, enrolled, answers, window = run_clients(d.bases, d.token, pool[args.strangers:],
                                                     pool[:args.strangers], args.enrollers, args.identifiers,
                                                     args.seconds)
    load_after = os.getloadavg()[0]
    print(f"load over: {len(enrolled)} enrolled, {len(answers)} identify answers; checking each person", flush=True)
    checking = time.monotonic()
    checked = after_check(d.bases, d.token, enrolled, args.identifiers)
    after_check_s = time.monotonic() - checking
    after = gallery_state(d)
    with d.gallery() as g:
        problems = g.check_consistency(model_version=after.production)
    meta = production_meta(d.home)[1]
    load = LoadApiRun(records, enrolled, answers, checked, window)
    verdict = checks(before, after, problems, load)
    return {"command": results_file.command("load_api", args.argv), "backend": args.backend,
            "api_processes": args.api_processes, "enrollers": args.enrollers, "identifiers": args.identifiers,
            "seconds": args.seconds, "photos": args.photos,
            "model": f"{meta['model_name']} ({meta['image_size']} px), version {before.production}, "
                     f"τ {meta['threshold']:.3f}",
            "machine": f"{os.cpu_count()} CPUs ({platform.machine()})",
            "load_average_1min": {"before": load_before, "after_load": load_after},
            "startup_s": startup, "window_s": window, "after_check_s": after_check_s,
            "people_before": len(before.people), "people_after": len(after.people),
            "enrol": kind_summary(load.logs("enrol"), window), "identify": kind_summary(load.logs("identify"), window),
            "answers": answer_counts(answers), "checks": verdict, "passed": all(c["ok"] for c in verdict.values()),
            "enrolled_people": sorted(load.names),
            "enrollers_out_of_identities": [r["worker"] for r in load.logs("enrol") if r.get("identities_left") == 0]}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.home:
        print("error: no production home: pass --home or set FACENET_HOME", file=sys.stderr)
        return 2
    pool = identities([Path(p) for p in args.photos], uuid.uuid4().hex[:6])
    if len(pool) < args.strangers + args.enrollers:
        print(f"error: {len(pool)} identities with two or more photos under {', '.join(args.photos)}; need more than "
              f"{args.strangers + args.enrollers}", file=sys.stderr)
        return 2
    try:
        result = run(args, pool)
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results_file.publish(args.out, result, table(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
