"""Enrolment and identify latency, written to experiments/results/bench_enroll.json + a markdown table.

    python -m experiments.bench_enroll                       # runs/celeba_nn4-main if present
    python -m experiments.bench_enroll --run runs/<run> --sizes 1000,100000   # skip the 1M gallery

* add-person, one photo: in a warm process (model and detector loaded; read + detect + align +
  embed + store with fsync), and as a cold CLI call (a fresh ``python -m enroll.cli`` process);
* identify end to end in a warm process on the small real gallery (photo -> name);
* search alone, one query at a time, over 1k / 100k / 1M synthetic 128-d unit vectors: ExactIndex
  vs FaissIndex (HNSW, IVF-Flat) with its search effort tuned to a recall@1 target, p50/p99
  latency, build time and recall@1 against exact, both for probes of enrolled people (noisy
  copies, ~0.6 away) and for random probes (strangers, who should come out "unknown" anyway).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import enroll  # noqa: F401  (tf-keras before TensorFlow)
from enroll.index import ExactIndex, FaissIndex, normalise, recall_at_1, tune_effort

REPO = Path(__file__).resolve().parents[1]


def tiny_run(tmp: Path) -> Path:
    """No trained run at hand: train the test suite's one-epoch tiny model on synthetic faces."""
    from tests.synthetic import make_identity_folders
    from tests.test_train import smoke_config
    from trainer import train

    cfg = smoke_config(make_identity_folders(tmp / "faces"), tmp, epochs=1, steps_per_epoch=4, run_name="bench")
    plan = train.plan_run(cfg, None, progress=False)
    train.launch(plan, cfg)
    return Path(plan.run_dir)


def loadable_run(run: Path, tmp: Path) -> Path:
    """Runs made before a trainer config key was retired no longer load (configs are strict): give
    the bench a copy of the plan without keys the current config lacks, checkpoints linked."""
    from dataclasses import replace

    from trainer import config as config_lib
    from trainer.run_plan import RunPlan

    plan = RunPlan.load(run)
    known = config_lib.Config().to_dict()
    config = {s: {k: v for k, v in sec.items() if k in known[s]} for s, sec in plan.config.items() if s in known}
    if config == plan.config:
        return run
    copy = tmp / run.name
    copy.mkdir()
    replace(plan, config=config).save(copy)
    (copy / "checkpoints").symlink_to(run.resolve() / "checkpoints")
    return copy


def single_face_photos(root: Path, size: int) -> list[Path]:
    from trainer.align import FaceAligner, read_image

    aligner = FaceAligner(size)
    return [p for p in sorted(root.glob("*/*.jpg")) if aligner.align(read_image(p)).status == "ok"]


def bench_enrolment(home: Path, photos: list[Path], warm_runs: int, cold_runs: int) -> dict:
    from enroll import service
    from enroll.model_versions import production
    from enroll.backends import open_gallery

    production(home)
    gallery = open_gallery(home, create=True)
    service.add_person(gallery, home, "warm-up", [photos[0]])
    warm = []
    for i in range(warm_runs):
        started = time.perf_counter()
        service.add_person(gallery, home, f"warm {i}", [photos[1 + i % (len(photos) - 1)]])
        warm.append((time.perf_counter() - started) * 1000)
    identify = []
    for i in range(warm_runs):
        started = time.perf_counter()
        service.identify(gallery, home, photos[-1 - i % len(photos)], 3)
        identify.append((time.perf_counter() - started) * 1000)
    gallery.close()
    cold = []
    for i in range(cold_runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "enroll.cli", "add-person", f"cold {i}", str(photos[i]), "--home",
                        str(home)], cwd=REPO, check=True, capture_output=True)
        cold.append(time.perf_counter() - started)
    return {"add_person_warm_ms_mean": float(np.mean(warm)), "add_person_warm_ms_p50": float(np.median(warm)),
            "add_person_warm_runs": warm_runs, "add_person_cold_cli_s_mean": float(np.mean(cold)),
            "add_person_cold_cli_runs": cold_runs, "identify_warm_ms_p50": float(np.median(identify)),
            "identify_gallery_people": warm_runs + 1}


def latency_ms(index, queries) -> tuple[float, float]:
    for q in queries[:5]:  # first calls allocate and spin up threads: not what a warm server pays
        index.search(q[None], 1)
    times = []
    for q in queries:
        started = time.perf_counter()
        index.search(q[None], 1)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def bench_search(size: int, n_queries: int, methods: list[str], target: float) -> list[dict]:
    rng = np.random.default_rng(size)
    gallery = normalise(rng.normal(size=(size, 128)).astype(np.float32))

    def probes(n):  # a new photo of an enrolled person: ~0.6 from their vector
        return normalise(gallery[rng.integers(0, size, n)] + rng.normal(scale=0.06, size=(n, 128)))

    enrolled, tuning = probes(n_queries), probes(n_queries)
    strangers = normalise(rng.normal(size=(n_queries, 128)))
    started = time.perf_counter()
    exact = ExactIndex().build(gallery)
    rows = [{"size": size, "index": "exact", "build_s": time.perf_counter() - started,
             "recall_at_1": 1.0, "recall_at_1_strangers": 1.0}]
    rows[0]["p50_ms"], rows[0]["p99_ms"] = latency_ms(exact, enrolled)
    for method in methods:
        started = time.perf_counter()
        approx = FaissIndex(method).build(gallery)
        build_s = time.perf_counter() - started
        effort, _ = tune_effort(approx, exact, tuning, target)  # on other probes than those measured
        row = {"size": size, "index": f"faiss-{method}", "build_s": build_s, "effort": effort,
               "recall_at_1": recall_at_1(approx, exact, enrolled),
               "recall_at_1_strangers": recall_at_1(approx, exact, strangers)}
        row["p50_ms"], row["p99_ms"] = latency_ms(approx, enrolled)
        rows.append(row)
        del approx
        print(f"  {size:>9,} {method}: built in {build_s:.1f}s, effort {effort}", flush=True)
    return rows


def table(results: dict) -> str:
    e = results["enrolment"]
    lines = [f"model: {results['model']} ({results['image_size']} px), {results['machine']}", "",
             "| operation | latency |", "| --- | --- |",
             f"| add-person, 1 photo, warm process (mean of {e['add_person_warm_runs']}) | "
             f"{e['add_person_warm_ms_mean']:.0f} ms (p50 {e['add_person_warm_ms_p50']:.0f} ms) |",
             f"| add-person, 1 photo, cold CLI process (mean of {e['add_person_cold_cli_runs']}) | "
             f"{e['add_person_cold_cli_s_mean']:.2f} s |",
             f"| identify, photo -> name, warm process, {e['identify_gallery_people']} people (p50) | "
             f"{e['identify_warm_ms_p50']:.0f} ms |", "",
             f"search effort (HNSW efSearch / IVF nprobe) tuned for recall@1 >= {results['recall_target']} on "
             "separate probes; recall below is measured on fresh ones", "",
             "| gallery | index | build | effort | p50 / query | p99 / query | recall@1 (enrolled probes) | "
             "recall@1 (strangers) |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["search"]:
        lines.append(f"| {r['size']:,} | {r['index']} | {r['build_s']:.1f} s | {r.get('effort', '-')} | "
                     f"{r['p50_ms']:.3f} ms | "
                     f"{r['p99_ms']:.3f} ms | {r['recall_at_1']:.3f} | {r['recall_at_1_strangers']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=str(REPO / "runs/celeba_nn4-main"), help="trained run (else a tiny one is trained)")
    parser.add_argument("--photos", default=str(REPO.parent / "shared/data/lfw_mini"), help="identity folders of photos")
    parser.add_argument("--sizes", default="1000,100000,1000000", help="synthetic gallery sizes (drop 1000000 to save ~4 min)")
    parser.add_argument("--methods", default="hnsw,ivf")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--recall-target", type=float, default=0.99, help="recall@1 the FAISS search effort is tuned to")
    parser.add_argument("--warm-runs", type=int, default=10)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "experiments/results/bench_enroll.json"))
    args = parser.parse_args(argv)
    from enroll.model_versions import production_meta, register_run
    from trainer.run_plan import PLAN_FILE

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if (Path(args.run) / PLAN_FILE).exists() else tiny_run(Path(tmp))
        home = Path(tmp) / "home"
        register_run(loadable_run(run, Path(tmp)), home)
        _, meta = production_meta(home)
        print(f"model {meta['model_name']} from {run}; timing enrolment", flush=True)
        photos = single_face_photos(Path(args.photos), meta["image_size"])
        enrolment = bench_enrolment(home, photos, args.warm_runs, args.cold_runs)
    search = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        print(f"search over {size:,} vectors", flush=True)
        search += bench_search(size, args.queries, [m for m in args.methods.split(",") if m], args.recall_target)
    results = {"model": meta["model_name"], "image_size": meta["image_size"], "source_run": str(run),
               "machine": f"{os.cpu_count()} CPUs ({platform.machine()})",
               "enrolment": enrolment, "search": search, "queries": args.queries, "recall_target": args.recall_target}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
