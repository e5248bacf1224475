"""Where a large gallery belongs: inside the TF-Serving SavedModel, or in the API's index.

    python -m experiments.gallery_placement [--sizes 1000 10000 100000 1000000] [--queries 200]

For each gallery size N (synthetic 128-d unit vectors, one person each, in a real SQLite home made
by experiments/synthetic_home.py; nn4_small2 at 96 px with random weights, since timings do not
depend on them), what each path pays per gallery change and per identify:

- both: reading the gallery from the database (an export and an index refresh both start there);
- SavedModel (TF-Serving): seconds and new bytes per version, for a full export (``tf.saved_model.save``
  of the already traced module) and for gallery-only versions (``export_home``, what
  enroll/serving_sync.py runs), both with the database read; the load of a version, with TF2's loader
  and with TF1's session loader (tensorflow_model_server's), since TF-Serving loads each new version
  and keeps two; identify at batch 1 through the ``identify`` signature (embedding and search in the graph);
- API index: the build after a change (exact, as enroll/change_feed.py rebuilds; FAISS HNSW), and
  identify = the same network's embedding (``serving_default``) + ``top_people`` on the index.

Identify latencies are p50 / p99 wall ms and the median CPU ms of this process (all threads), the
paths' calls interleaved: on a shared machine the CPU figure is the steadier one.

Writes experiments/results/gallery_placement.json (+ .md) through experiments/results_file.py.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import tensorflow as tf

from experiments import results_file
from experiments.synthetic_home import MODEL_VERSION, unit_vectors

RESULTS = Path(__file__).resolve().parent / "results" / "gallery_placement.json"
TOP_K = 5


def latencies(fns: dict, runs: int) -> dict[str, dict]:
    """p50 / p99 wall milliseconds and median CPU milliseconds (all threads of this process) of each
    function, the calls interleaved so that load from other processes on a shared machine hits
    every path alike; 3 warm-up calls each first."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    wall: dict[str, list] = {name: [] for name in fns}
    cpu: dict[str, list] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    return {name: {"p50_ms": round(float(np.percentile(wall[name], 50)) * 1000, 2),
                   "p99_ms": round(float(np.percentile(wall[name], 99)) * 1000, 2),
                   "cpu_ms": round(float(np.median(cpu[name])) * 1000, 2)} for name in fns}


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 3)


def export_costs(home: Path, versions: int, size: int) -> tuple[dict, Path]:
    """A full export of the gallery, then ``versions`` gallery-only ones after one enrolment each
    (``export_home``: the database read included, as enroll/serving_sync.py runs it)."""
    from enroll.serving_export import export_home, export_spec
    from enroll.store import SqliteGallery
    from serving import versions as served
    from serving.export import export

    def full_export():  # the database read included, as in export_home
        spec = export_spec(home)
        return export(spec["model"], home / "serving", "facenet", spec["gallery_embeddings"], spec["gallery_names"],
                      spec["threshold"], gallery_only=False)

    full, full_s = _timed(full_export)
    full_mib = round(served.new_bytes(full) / 2**20, 2)
    seconds, written = [], []
    extra = unit_vectors(versions + 1, seed=size)
    with SqliteGallery(home) as gallery:
        # The first gallery-only version after a full one writes the network shard once; the
        # others link it. Only the steady state (versions 2..) is reported.
        for i in range(versions + 1):
            gallery.add_person(f"added-{size}-{i}", [(f"crop {size} {i}".encode(), "added.jpg")],
                               {MODEL_VERSION: extra[i:i + 1]})
            path, s = _timed(lambda: export_home(home))
            seconds.append(s)
            written.append(served.new_bytes(path))
    served.prune(home / "serving", "facenet", 2)
    seconds, written = seconds[1:], written[1:]
    return {"full_export_s": full_s, "full_export_mib": full_mib,
            "gallery_export_s": round(float(np.median(seconds)), 3),
            "gallery_export_mib": round(float(np.median(written)) / 2**20, 2)}, path


def identify_costs(path: Path, names: list[str], matrix: np.ndarray, queries: int, hnsw_max: int) -> dict:
    """Load the version as TF-Serving would, then identify through it and through the API's indexes."""
    from enroll.index import ExactIndex, FaissIndex, top_people

    image = tf.constant(np.random.default_rng(1).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32))

    def load():
        loaded = tf.saved_model.load(str(path))
        loaded.signatures["identify"](images=image)  # TF-Serving replays warm-up requests at load
        return loaded

    def session_load():  # TF1's loader, as tensorflow_model_server and saved_model_cli load a version
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
            tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))

    _, session_s = _timed(session_load)
    loaded, load_s = _timed(load)
    identify, embed = loaded.signatures["identify"], loaded.signatures["serving_default"]
    indexes = {"exact": None, "hnsw": None}
    indexes["exact"], exact_s = _timed(lambda: ExactIndex().build(matrix, names))
    out = {"load_version_s": load_s, "session_load_s": session_s, "exact_build_s": exact_s}
    if len(matrix) <= hnsw_max:
        indexes["hnsw"], out["hnsw_build_s"] = _timed(lambda: FaissIndex("hnsw").build(matrix, names))

    def via(index):
        return lambda: top_people(index, embed(images=image)["embeddings"].numpy(), TOP_K)

    fns = {"savedmodel": lambda: identify(images=image)["names"].numpy(),
           "embed_only": lambda: embed(images=image)["embeddings"].numpy(),
           **{f"api_{k}": via(index) for k, index in indexes.items() if index is not None}}
    out["identify"] = latencies(fns, queries)
    return out


def run(sizes: list[int], workdir: Path, queries: int, versions: int, hnsw_max: int):
    """One home whose gallery grows through ``sizes``; yields a row per size."""
    from enroll.backends import gallery_rows
    from experiments.synthetic_home import fill_gallery, install_model
    from trainer.models import build_model

    home = workdir / "home"
    install_model(home, build_model("nn4_small2", input_size=96), threshold=0.05)
    from enroll.serving_export import export_home

    export_home(home)  # trace the serving module once, untimed: the rows compare exports, not tracing
    enrolled = 0
    for size in sizes:
        fill_s = fill_gallery(home, unit_vectors(size - enrolled, seed=size))
        (names, matrix), read_s = _timed(lambda: gallery_rows(home, MODEL_VERSION))
        enrolled = len(names)
        row = {"people": size, "fill_db_s": round(fill_s, 2), "db_read_s": read_s}
        costs, path = export_costs(home, versions, size)
        row.update(costs)
        row.update(identify_costs(path, names, matrix, queries, hnsw_max))
        enrolled += versions + 1
        del names, matrix
        gc.collect()
        yield row


def _pair(r: dict, key: str) -> str:
    v = r["identify"].get(key)
    return f"{v['p50_ms']:.1f} / {v['p99_ms']:.1f} ({v['cpu_ms']:.1f})" if v else "not run"


def table(rows: list[dict]) -> str:
    lines = ["| people | DB read (s) | SavedModel: full export (s / MiB) | gallery-only version (s / MiB) "
             "| load a version: TF2 / TF1 session (s) | identify via SavedModel | API exact: rebuild (s) | API exact identify "
             "| API HNSW: build (s) | API HNSW identify | embed alone |",
             "| ---: | ---: | --- | --- | ---: | --- | ---: | --- | ---: | --- | --- |"]
    for r in rows:
        hnsw = f"{r['hnsw_build_s']:.1f}" if "hnsw_build_s" in r else "not run"
        lines.append(f"| {r['people']:,} | {r['db_read_s']:.2f} | {r['full_export_s']:.2f} / {r['full_export_mib']:.1f} "
                     f"| {r['gallery_export_s']:.2f} / {r['gallery_export_mib']:.1f} | {r['load_version_s']:.1f} / {r['session_load_s']:.1f} "
                     f"| {_pair(r, 'savedmodel')} | {r['exact_build_s']:.2f} | {_pair(r, 'api_exact')} "
                     f"| {hnsw} | {_pair(r, 'api_hnsw')} | {_pair(r, 'embed_only')} |")
    return "\n".join(lines) + "\n\nidentify: p50 / p99 wall ms (median CPU ms), batch 1, embedding included."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200, help="identify calls per path and size")
    parser.add_argument("--versions", type=int, default=3, help="gallery-only versions per size (median reported)")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="skip the HNSW build above this size")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gallery-placement-") as workdir:
        for row in run(sorted(args.sizes), Path(workdir), args.queries, args.versions, args.hnsw_max):
            rows.append(row)
            print(row, flush=True)
    result = {"command": results_file.command("gallery_placement", argv),
              "machine": {"cpus": os.cpu_count(), "tensorflow": tf.__version__,
                          "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
              "model": "nn4_small2, 96 px, random weights; gallery: synthetic 128-d unit vectors, one face per person",
              "top_k": TOP_K, "rows": rows}
    results_file.publish(Path(args.out), result, table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
