"""The gallery backends side by side: SQLite (one machine) and PostgreSQL (shared), same contract.

    python -m experiments.gallery_backends [--people 5000] [--writes 200] [--url postgresql://...]

For each backend: a gallery of ``--people`` people (one 128-d face and a ~3 KB crop each) is built
through ``add_person``; then ``--writes`` more enrolments and a quarter as many removals are timed
one by one (each is one durable transaction); the whole gallery's vectors are read; and the
change-feed lag is measured: another process enrols and removes people, and this one searches
until its ``SyncedIndex`` answers with the change (PostgreSQL: LISTEN/NOTIFY; SQLite: the gallery
version checked before a search): extended by the new face after an enrolment, built again from
every vector after a removal, both timed.

Without ``--url`` PostgreSQL is a throw-away local server (tests/postgres_server.py) with fsync
on, like SQLite's ``synchronous=FULL``. Results: experiments/results/gallery_backends.json and .md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.results_file import command, save

REPO = Path(__file__).resolve().parents[1]
DIM = 128
WRITER = """
import sys, time
import numpy as np
from enroll.backends import open_gallery
g = open_gallery(sys.argv[1], create=True, url=sys.argv[2] or None)
print("ready", flush=True)
for line in sys.stdin:
    verb, name = line.split(maxsplit=1)
    name = name.strip()
    if verb == "add":
        g.add_person(name, [(name.encode() * 100, "a.jpg")], {1: np.ones((1, 128), np.float32)})
    else:
        g.remove_person(name)
    print(time.time(), flush=True)
"""


def person(rng, i: int) -> tuple[list[tuple[bytes, str]], dict[int, np.ndarray]]:
    vector = rng.normal(size=(1, DIM)).astype(np.float32)
    return [(rng.bytes(3000) + i.to_bytes(4, "big"), f"{i}.jpg")], {1: vector / np.linalg.norm(vector)}


def quantiles(ms: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(max(ms))}


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def change_feed_lag(home: Path, url: str | None, gallery, changes: int) -> dict:
    """Milliseconds from another process's commit until this process's synced index answers with it."""
    from enroll.change_feed import SyncedIndex

    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home), url or ""], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    lags, seconds = [], {"add": [], "remove": []}  # the synced index's update / rebuild after each change
    with SyncedIndex(gallery, lambda: 1) as synced:
        synced.current()
        assert writer.stdout.readline().strip() == "ready"
        if synced.listener:
            synced.listener.listening.wait(10)
        for i in range(changes):
            name, verb = f"feed {i // 2}", "add" if i % 2 == 0 else "remove"
            writer.stdin.write(f"{verb} {name}\n")
            writer.stdin.flush()
            while (name in (snapshot := synced.current()).index.names) != (verb == "add"):
                time.sleep(0.001)
            seen = time.time()
            lags.append((seen - float(writer.stdout.readline())) * 1000)
            seconds[verb].append(snapshot.build_seconds * 1000)
    writer.stdin.close()
    writer.wait(60)
    # After an enrolment the index is extended by the new faces; after a removal it is built again.
    return {"lag": quantiles(lags), "changes": changes, "index_update_ms": float(np.median(seconds["add"])),
            "index_rebuild_ms": float(np.median(seconds["remove"]))}


def measure(name: str, home: Path, url: str | None, people: int, writes: int, changes: int) -> dict:
    from enroll.backends import open_gallery

    rng = np.random.default_rng(0)
    gallery = open_gallery(home, create=True, url=url)
    started = time.perf_counter()
    for i in range(people):
        gallery.add_person(f"person {i}", *person(rng, i))
    build_s = time.perf_counter() - started
    adds = [timed(lambda i=i: gallery.add_person(f"new {i}", *person(rng, people + i))) for i in range(writes)]
    removes = [timed(lambda i=i: gallery.remove_person(f"new {i}")) for i in range(writes // 4)]
    reads = [timed(lambda: gallery.embeddings(1)) for _ in range(5)]
    version = [timed(gallery.gallery_version) for _ in range(50)]
    result = {"backend": name, "people": people, "build_enrolments_per_s": people / build_s,
              "add_person": quantiles(adds), "remove_person": quantiles(removes),
              "read_all_vectors_ms": float(np.median(reads)), "gallery_version_ms": float(np.median(version)),
              **change_feed_lag(home, url, gallery, changes)}
    problems = gallery.check_consistency(model_version=1, verify_crops=False)
    gallery.close()
    if problems:
        raise SystemExit(f"{name}: inconsistent after the run: {problems[:3]}")
    return result


def table(rows: list[dict]) -> str:
    lines = ["| backend | people | enrol p50 / p99 ms | remove p50 / p99 ms | read all vectors ms | "
             "index update after an enrolment ms | index rebuild after a removal ms | "
             "change seen by another process p50 / max ms |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['people']} | {r['add_person']['p50_ms']:.1f} / {r['add_person']['p99_ms']:.1f} | "
                     f"{r['remove_person']['p50_ms']:.1f} / {r['remove_person']['p99_ms']:.1f} | "
                     f"{r['read_all_vectors_ms']:.1f} | {r['index_update_ms']:.2f} | {r['index_rebuild_ms']:.1f} | "
                     f"{r['lag']['p50_ms']:.1f} / {r['lag']['max_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--changes", type=int, default=40, help="changes timed through the change feed")
    parser.add_argument("--url", default="", help="an empty PostgreSQL database (default: a throw-away local server)")
    parser.add_argument("--out", default=str(REPO / "experiments/results/gallery_backends.json"))
    args = parser.parse_args(argv)
    rows, server = [], None
    with tempfile.TemporaryDirectory(prefix="gallery-backends-") as tmp:
        rows.append(measure("sqlite", Path(tmp) / "home", None, args.people, args.writes, args.changes))
        url = args.url
        if not url:
            from tests.postgres_server import PostgresServer, server_binaries

            server = PostgresServer(server_binaries(), durable=True)
            server.execute("CREATE DATABASE bench")
            url = server.url("bench")
        try:
            rows.append(measure("postgresql", Path(tmp) / "pg-home", url, args.people, args.writes, args.changes))
        finally:
            if server:
                server.close()
    result = {"command": command("gallery_backends", argv), "cpus": os.cpu_count(), "rows": rows}
    save(Path(args.out), result, table(rows))
    print(table(rows))
    return result


if __name__ == "__main__":
    main()
