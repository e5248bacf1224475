"""Any model on any benchmark in LFW's ``pairs.txt`` format (LFW itself, or the cross-dataset pairs
``python -m trainer.evaluation.pairs`` writes).

    python -m trainer.evaluate RUN_DIR --pairs lfw/pairs.txt --images lfw/lfw [--name lfw]

A pair's ``(name, index)`` is the photo ``DIR/<name>/<name>_<index:04d>.<ext>`` in a folder named
the LFW way, else the index-th (1-based) photo of ``DIR/<name>/`` in sorted order (the numbering of
``pairs.py``). The two agree on a complete LFW folder; where a folder's LFW numbers have gaps (a
subset of LFW, like lfw_mini) they do not, and the caller says which the file uses (``numbering``
"lfw" or "sorted"; "auto" refuses such an index rather than guess).

Photos are aligned like training data (``prepare``, cached), except that a photo MTCNN finds no
face in is still embedded (``align="detect_or_resize"``), from a centre crop or, in dlib's framing
with dlib installed, from dlib's landmarks over the whole photo (``identity_shard.fallback_crop``),
and counted as ``fallback_photos``: a benchmark scores every pair. Accuracy is LFW's 10-fold figure (threshold
chosen on the other folds, applied to the held-out one), see ``lfw_protocol``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from trainer.align import DEFAULT_TEMPLATE
from trainer.evaluation import lfw_protocol, pairs as pairs_lib
from trainer.run_plan import RunPlan

ALIGN_MODE = "detect_or_resize"
NUMBERINGS = ("auto", "lfw", "sorted")


def benchmark_name(pairs_path, name: str | None = None) -> str:
    """``name`` made safe for a folder and metric names; by default ``yaleb27`` for
    ``.../yaleb27.pairs.txt`` and the folder's name (``lfw``) for ``lfw/pairs.txt`` or
    ``lfw/pairsDevTest.txt``."""
    if not name:
        path = Path(pairs_path).resolve()
        stem = path.name.split(".")[0]
        name = path.parent.name if stem.lower().startswith("pairs") and path.parent.name else stem
    return re.sub(r"[^\w.-]", "_", name) or "benchmark"


def _pair_lines(pairs_path) -> list[int]:
    """The file line of every pair, in ``read_pairs`` order (blank lines skipped, header dropped)."""
    with open(pairs_path, encoding="utf-8") as f:
        return [no for no, line in enumerate(f, 1) if line.strip()][1:]


def _lfw_numbers(name: str, files: list[str]) -> dict[int, str]:
    """``{n: path}`` for the files of a folder named the LFW way, ``<name>_<nnnn>.<ext>``."""
    pattern = re.compile(re.escape(name) + r"_(\d{4})")
    return {int(m[1]): f for f in files if (m := pattern.fullmatch(Path(f).stem))}


def _photo(folders: dict, lfw: dict, images_dir: Path, name: str, index: int, numbering: str) -> str:
    """The photo a pair means by ``(name, index)``; ``LookupError`` naming what is missing."""
    if name not in folders:
        raise LookupError(f"no photo folder {images_dir / name} for {name!r}")
    try:  # the numbering pairs.py writes, on this one folder
        nth = pairs_lib.resolve_pair_paths([lfw_protocol.Pair(name, index, name, index, True, 0)],
                                           {name: folders[name]})[0][0]
    except ValueError:
        nth = None
    by_lfw = lfw[name].get(index)
    if not lfw[name]:  # a folder not named the LFW way has one numbering only
        numbering = "sorted"
    elif numbering == "auto":
        if by_lfw != nth:  # LFW-named files with gaps: the two numberings disagree
            raise LookupError(
                f"{name} {index} is ambiguous: LFW's numbering means {by_lfw or 'a missing photo'}, "
                f"the folder's photo {index} in sorted order is {nth or 'missing'}; choose numbering "
                f"(--numbering) lfw for LFW's own pairs files or sorted for trainer.evaluation.pairs")
        numbering = "lfw"
    photo = by_lfw if numbering == "lfw" else nth
    if photo is None:
        raise LookupError(f"missing photo {images_dir / name / f'{name}_{index:04d}'}.*" if numbering == "lfw" else
                          f"missing photo {index} of {images_dir / name} (it has {len(folders[name])} photos)")
    return photo


def resolve_photos(pairs_path, images_dir, numbering: str = "auto") -> tuple[list, list[tuple[str, str]]]:
    """``(pairs, [(left photo, right photo)])`` for a pairs file over ``images_dir``. In a folder
    named the LFW way, ``numbering`` "lfw" takes ``<name>_<index:04d>.*``, "sorted" the index-th
    file in sorted order, "auto" either where the two agree; other folders are always "sorted". A
    missing file, folder or photo, or an ambiguous index, is ``FileNotFoundError``/``ValueError``
    with a one-line message naming the pairs file's line."""
    if numbering not in NUMBERINGS:
        raise ValueError(f"numbering must be one of {', '.join(NUMBERINGS)}, got {numbering!r}")
    pairs_path, images_dir = Path(pairs_path), Path(images_dir)
    if not pairs_path.is_file():
        raise FileNotFoundError(f"pairs file not found: {pairs_path}")
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found or not a directory: {images_dir}")
    pairs = lfw_protocol.read_pairs(pairs_path)
    if len({p.fold for p in pairs}) < 2:
        raise ValueError(f"{pairs_path}: the 10-fold protocol needs at least 2 folds with pairs")
    folders = pairs_lib.identity_folders(images_dir)
    lfw = {name: _lfw_numbers(name, files) for name, files in folders.items()}
    photos = []
    for pair, line in zip(pairs, _pair_lines(pairs_path)):
        try:
            photos.append(tuple(_photo(folders, lfw, images_dir, name, index, numbering) for name, index in
                                ((pair.left_name, pair.left_index), (pair.right_name, pair.right_index))))
        except LookupError as err:
            raise ValueError(f"{pairs_path}:{line}: {err.args[0]}") from None
    return pairs, photos


def _key(identity: str, path: str) -> tuple[str, str]:
    # Shards are shared by identical photos under other roots, so a record's source may name
    # another folder: a photo is its identity plus its file name.
    return identity, Path(path).name


def embed_photos(model, manifest: dict, names: list[str], image_size: int, batch_size: int = 128):
    """``({photo key: embedding}, {photo key: shard status entry})`` for the ``names``' shards;
    ``model`` may be a teacher's name (trainer/teacher.py: its cached embeddings)."""
    from trainer.evaluate import embed_shards
    from trainer.splits import shard_paths

    shards = shard_paths(manifest, names)
    entries = {}
    for shard in shards:
        summary = json.loads(Path(shard + ".json").read_text())
        entries.update({_key(summary["identity"], e["source"]): e for e in summary["images"]})
    embeddings, identities, sources = embed_shards(model, shards, image_size, batch_size)
    vectors = {_key(i, s): v for v, i, s in zip(embeddings, identities, sources)}
    return vectors, entries


def evaluate_benchmark(model, pairs_path, images_dir, cache_dir, image_size: int, far_target: float = 1e-3,
                       out_dir=None, batch_size: int = 128, numbering: str = "auto", ray_address: str = "",
                       progress: bool = False, template: str = DEFAULT_TEMPLATE) -> dict:
    """LFW-protocol metrics of ``model`` on a pairs file over ``images_dir`` (aligned into
    ``cache_dir`` at ``image_size`` in the model's face ``template``), plus ``pairs``, ``photos`` and
    ``fallback_photos``; with
    ``out_dir``, also ``metrics.json``, ``roc.png``, ``distances.png`` and ``fallback_photos.txt``.
    ``model`` may be a teacher's name: the benchmark is then prepared with that teacher's embeddings."""
    from trainer.prepare import prepare

    pairs, photos = resolve_photos(pairs_path, images_dir, numbering)
    used = {_key(Path(p).parent.name, p) for pair in photos for p in pair}
    manifest = prepare(str(images_dir), cache_dir, image_size, ALIGN_MODE, ray_address=ray_address,
                       progress=progress, teacher=model if isinstance(model, str) else "", template=template)
    vectors, entries = embed_photos(model, manifest, sorted({name for name, _ in used}), image_size, batch_size)
    for key in sorted(used - vectors.keys()):
        entry = entries.get(key, {})
        raise ValueError(f"photo {Path(images_dir) / key[0] / key[1]} could not be embedded: "
                         f"{entry.get('status', 'not prepared')} {entry.get('reason', '')}".strip())
    left = np.stack([vectors[_key(Path(a).parent.name, a)] for a, _ in photos])
    right = np.stack([vectors[_key(Path(b).parent.name, b)] for _, b in photos])
    dist = np.linalg.norm(left - right, axis=1)
    same = np.array([p.same for p in pairs])
    metrics = dict(lfw_protocol.evaluate_pairs(dist, same, np.array([p.fold for p in pairs]), far_target))
    fallback = sorted(f"{n}/{f}" for n, f in used if entries[(n, f)]["status"] == "resized")
    by_landmarks = sum(entries[(n, f)].get("fallback") == "dlib_landmarks" for n, f in used)
    metrics.update(pairs=float(len(pairs)), photos=float(len(used)), fallback_photos=float(len(fallback)),
                   fallback_dlib_landmarks=float(by_landmarks),
                   folds=float(len({p.fold for p in pairs})), far_target=float(far_target))
    if out_dir is not None:
        write_report(metrics, dist, same, fallback, out_dir)
    return metrics


def write_report(metrics: dict, dist, same, fallback: list[str], out_dir) -> Path:
    """``metrics.json``, the ROC and distance-histogram PNGs and the list of fallback photos."""
    from trainer.evaluation import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "fallback_photos.txt").write_text("".join(f"{p}\n" for p in fallback))
    fpr, tpr, _ = lfw_protocol.roc(dist, same)
    plots.plot_roc(fpr, tpr, out / "roc.png", label=f"AUC {metrics['auc']:.3f}")
    plots.plot_distance_histogram(dist, same, out / "distances.png", threshold=metrics["best_threshold"])
    return out


def log_to_run(plan: RunPlan, name: str, metrics: dict, out_dir) -> bool:
    """Log ``bench_<name>_<metric>`` and the report (artefacts ``bench-<name>/``) to the run's
    MLflow run; False when the run is not tracked."""
    if not plan.mlflow_run_id or not plan.tracking_uri:
        return False
    import mlflow

    mlflow.set_tracking_uri(plan.tracking_uri)
    with mlflow.start_run(run_id=plan.mlflow_run_id):
        mlflow.log_metrics({f"bench_{name}_{k}": v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_artifacts(str(out_dir), f"bench-{name}")
    return True


def run_benchmarks(plan: RunPlan, cfg) -> dict:
    """The run's kept model on every ``eval.benchmarks`` entry (LFW's protocol), on the driver once
    training ended (its alignment needs Ray's CPUs, which the training workers held): reports in
    eval-<name>/, figures in results.json and the run's MLflow run (``bench_<name>_<metric>``)."""
    if not cfg.eval.benchmarks:
        return {}
    from trainer import checkpoints, run_results

    model = checkpoints.load_run(plan.run_dir)[0]
    found = {}
    for bench in cfg.eval.benchmarks:
        name = benchmark_name(bench.pairs, bench.name or None)
        found[name] = evaluate_benchmark(model, bench.pairs, bench.images, cfg.data.cache_dir, plan.image_size,
                                         cfg.eval.far_target, Path(plan.run_dir) / f"eval-{name}",
                                         cfg.eval.eval_batch_size, bench.numbering, cfg.ray.address,
                                         template=plan.face_template)
        print(f"benchmark {name}: accuracy {found[name]['accuracy']:.4f} ± {found[name]['accuracy_std']:.4f}, "
              f"AUC {found[name]['auc']:.4f} ({int(found[name]['pairs'])} pairs)", flush=True)
        log_to_run(plan, name, found[name], Path(plan.run_dir) / f"eval-{name}")
    run_results.save(plan.run_dir, {**run_results.load(plan.run_dir), "benchmarks": found})
    return found



def format_table(name: str, metrics: dict) -> str:
    """A short report: accuracy ± std, VAL@FAR, AUC, EER and the counts."""
    m = metrics
    rows = [("benchmark", name),
            (f"accuracy ({m['folds']:.0f}-fold)", f"{m['accuracy']:.4f} ± {m['accuracy_std']:.4f}"),
            (f"VAL@FAR={m['far_target']:g}", f"{m['val']:.4f} ± {m['val_std']:.4f} (FAR {m['far']:.4g})"),
            ("AUC", f"{m['auc']:.4f}"), ("EER", f"{m['eer']:.4f}"),
            ("pairs", f"{m['pairs']:.0f}"), ("photos", f"{m['photos']:.0f}"),
            ("fallback_photos", f"{m['fallback_photos']:.0f} (no face found by MTCNN; {m.get('fallback_dlib_landmarks', 0):.0f} "
                                  "aligned by dlib's landmarks, the rest centre-cropped)")]
    return "\n".join(f"{k:22s} {v}" for k, v in rows)
