"""Detect + align a whole dataset once, in parallel on Ray, into per-identity TFRecord shards.

    python -m trainer.prepare --config experiments/distill_dlib.yaml [--set model.input_size=128]
    python -m trainer.prepare --source ../shared/data/celeba299 --size 96

With ``--config``, everything that config's runs read is prepared (``data.source``, every
``data.sources`` entry and ``data.extra_source``, with ``train.teacher``'s embeddings), so a
later ``trainer.train`` finds its cache warm; ``--source`` prepares one folder alone.

The source is an identity-folder root (``root/<identity>/*.jpg|png|pgm``) or ``tfds:<name>``
(exported once to an identity folder under the cache). One Ray task per identity
(``trainer/identity_shard.py``) detects (MTCNN), aligns and JPEG-encodes every photo, writing
``<identity>-<fingerprint>.tfrecord``. The
fingerprint covers the identity's file names and contents (SHA-1) plus the alignment settings, so a
re-run reuses every shard whose inputs did not change, also after the photos were copied afresh
(a new mtime is not a new photo) and only redoes changed identities; shards no
manifest uses any more are deleted by ``--prune``. One shard
per identity is also what makes P×K batching a plain ``tf.data`` interleave (see pipeline.py).

A manifest per dataset root (``aligned-<size>/manifests/``) records every shard and the counts: images read, faces aligned, no face,
several faces (largest kept), unreadable, non-image files and empty identity folders.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from trainer import cliargs
from trainer.align import DEFAULT_TEMPLATE, IMAGE_EXTENSIONS, template_landmarks
from trainer.config import ConfigError, fingerprint
from trainer.identity_shard import ALIGNED_STATUSES, align_identity, fallback_available
from trainer.teacher_cache import teacher_cached, teacher_path  # noqa: F401  (teacher_path re-exported)

ALIGN_VERSION = 2  # bump when alignment output changes, to invalidate caches
RESIZED_SUFFIX = "-resized"  # the shard folder of sources that are only resized (``align`` False)


def resized_only(shard: str | Path) -> bool:
    """True for a shard of a source that was only resized, not detected and aligned."""
    return Path(shard).parent.name.endswith(RESIZED_SUFFIX)


class DatasetError(ValueError):
    """A dataset that cannot be used at all (missing path, no identities); one-line message."""


def list_identity_folder(root: str | Path) -> tuple[dict[str, list[Path]], Counter]:
    """``{identity: [image paths]}`` for ``root/<identity>/*``, plus counts of what was skipped."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset path not found or not a directory: {root} (point data.source, e.g. "
                           f"--set data.source=DIR, at a folder of <identity>/<photo>.jpg, or use tfds:<name>)")
    counts: Counter = Counter()
    identities: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        counts["non_image_files"] += len(files) - len(images)
        if not images:
            counts["empty_identities"] += 1
            continue
        identities[folder.name] = images
    if not identities:
        raise DatasetError(f"no identity folders with images under {root} (expected {root}/<identity>/*.jpg)")
    return identities, counts


def _slug(name: str) -> str:
    """A file-system-safe, collision-free name for an identity (unicode names are kept readable)."""
    safe = re.sub(r"[^\w.-]", "_", name)[:60] or "_"
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _identity_fingerprint(files: list[Path], size: int, align: bool | str, template: str = DEFAULT_TEMPLATE) -> str:
    # Contents, not mtimes: a dataset copied again (rsync without -t, a fresh volume) keeps its cache.
    stats = [(p.name, hashlib.sha1(p.read_bytes()).hexdigest()) for p in files]
    mode = {True: True, False: False}.get(align, align)  # True/False keep the fingerprints of old caches
    inputs = {"files": stats, "size": size, "align": mode, "v": ALIGN_VERSION}
    if align in ("prealigned", "detect_or_resize") and fallback_available(template):
        inputs["fallback"] = "dlib_landmarks"  # only these shards change with dlib's fallback; the rest keep their cache
    return fingerprint(inputs)


def shard_dir(cache_dir: Path, size: int, align: bool | str, template: str = DEFAULT_TEMPLATE) -> Path:
    """The folder of the shards of ``size`` px crops in ``template``'s framing (only-resized sources
    have their own: a resize has no framing). Framings never share a folder, so a shard's name (its
    photos' fingerprint) need not name its framing, and the default's folder is the one of old caches."""
    if not align:
        return cache_dir / f"aligned-{size}{RESIZED_SUFFIX}"
    return cache_dir / f"aligned-{size}{'' if template == DEFAULT_TEMPLATE else '-' + template}"


def prepare(source: str, cache_dir: str | Path, size: int, align: bool | str = True,
            max_identities: int = 0, workers: int = 0, ray_address: str = "", progress: bool = True,
            teacher: str = "", max_per_identity: int = 0, template: str = DEFAULT_TEMPLATE) -> dict:
    """Align ``source`` at ``size`` px (cached); return the manifest (also written to disk).

    ``align`` is True, False, "prealigned" or "detect_or_resize" (see ``align_identity``); ``teacher`` also caches
    that teacher's embeddings beside every shard; ``max_per_identity`` keeps the first N photos
    (sorted) of each identity; ``template`` is the face framing (trainer/align.py ``TEMPLATES``).
    """
    from trainer.ray_setup import bounded_tasks, ensure_ray

    cache_dir = Path(cache_dir).expanduser().resolve()  # Ray workers run from other directories
    from trainer.tfds_source import export_tfds

    root = export_tfds(source[5:], cache_dir, os.environ.get("TFDS_DATA_DIR")) if source.startswith("tfds:") \
        else Path(source).expanduser()
    identities, counts = list_identity_folder(root)
    if max_identities:
        identities = dict(list(identities.items())[:max_identities])
    if max_per_identity:
        identities = {name: files[:max_per_identity] for name, files in identities.items()}
    if align == "prealigned":
        _check_square(root, identities)
    if teacher:
        from trainer.teacher import check_teacher

        check_teacher(teacher)  # a missing extra stops here, before any work
    # Shards are shared by every dataset root at this size: a shard's name is its identity plus the
    # fingerprint of its inputs, so the same photos (e.g. a base set and a changed copy of it made
    # of symlinks) are aligned once. Each root has its own manifest.
    template_landmarks(template)  # an unknown framing fails before any work
    out = shard_dir(cache_dir, size, align, template)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifests" / f"{_slug(root.resolve().name)}-{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:6]}.json"

    summaries, todo = {}, []
    for identity, files in identities.items():
        shard = out / f"{_slug(identity)}-{_identity_fingerprint(files, size, align, template)[:10]}.tfrecord"
        cached = Path(str(shard) + ".json")
        summary = json.loads(cached.read_text()) if shard.exists() and cached.exists() else None
        if summary is not None and (not teacher or teacher_cached(shard, teacher, summary["aligned"])):
            summaries[identity] = summary
        else:
            todo.append((identity, [str(p) for p in files], str(shard)))

    if todo:
        ensure_ray(ray_address)
        started = time.time()
        bar = progress_bar(len(todo), progress, "aligning identities" + (f" + {teacher} teacher" if teacher else ""))
        tasks = [(*args, size, align, teacher, template) for args in todo]
        for summary in bounded_tasks(align_identity, tasks, workers):
            summaries[summary["identity"]] = summary
            bar.update(1)
        bar.close()
        counts["seconds_aligning"] = round(time.time() - started, 1)

    counts["identities_reused"] = len(summaries) - len(todo)
    return _write_manifest({"source": source, "root": str(root), "size": size, "align": align,
                            "align_version": ALIGN_VERSION, "teacher": teacher, "template": template, "dir": str(out),
                            "path": str(manifest_path)}, summaries, counts)


def _write_manifest(manifest: dict, summaries: dict, counts: Counter) -> dict:
    """The manifest (``manifest`` plus counts, shards and rejected photos), written atomically."""
    statuses = Counter(e["status"] for s in summaries.values() for e in s["images"])
    counts.update(images_read=sum(statuses.values()),
                  faces_aligned=sum(statuses[k] for k in ALIGNED_STATUSES),
                  no_face=statuses["no_face"], several_faces=statuses["several_faces"],
                  resized_no_face=statuses["resized"], unreadable=statuses["unreadable"], identities=len(summaries))
    # of resized_no_face, those aligned by dlib's landmarks instead of a centre crop (identity_shard.fallback_crop)
    counts["fallback_dlib_landmarks"] = sum(e.get("fallback") == "dlib_landmarks"
                                            for s in summaries.values() for e in s["images"])
    if manifest["teacher"]:
        counts["teacher_failed"] = sum(e.get("teacher") is False for s in summaries.values() for e in s["images"])
    manifest.update(
        fingerprint=fingerprint(sorted(s["shard"] for s in summaries.values())), counts=dict(counts),
        identities={k: {"shard": s["shard"], "aligned": s["aligned"]} for k, s in sorted(summaries.items())},
        rejected=[e for s in summaries.values() for e in s["images"] if e["status"] in ("no_face", "unreadable")])
    path = Path(manifest["path"])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.rename(path)
    return manifest


def _check_square(root: Path, identities: dict[str, list[Path]]) -> None:
    """A source declared pre-aligned must hold square crops (a resize keeps their framing); one
    that does not is refused before anything is written."""
    from PIL import Image

    for files in identities.values():
        for path in files:
            try:
                with Image.open(path) as img:
                    width, height = img.size
            except OSError:
                continue  # unreadable photos are counted by the alignment, not refused here
            if width != height:
                raise DatasetError(f"source {root} is declared pre-aligned (align: prealigned) but {path} is "
                                   f"{width}x{height}, not square: declare it align: detect instead")


def progress_bar(total: int, enabled: bool, desc: str = "aligning identities"):
    """The progress bar of per-identity preparation work (on stderr; ``enabled`` False hides it)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="id", disable=not enabled, file=sys.stderr)


def prune(cache_dir: str | Path) -> int:
    """Delete shards that no manifest refers to any more (e.g. after photos changed); returns the count."""
    removed = 0
    for out in Path(cache_dir).expanduser().glob("aligned-*"):
        keep = {entry["shard"] for m in (out / "manifests").glob("*.json")
                for entry in json.loads(m.read_text())["identities"].values()}
        for path in out.glob("*.tfrecord"):
            shard = path.name.split(".tfrecord")[0] + ".tfrecord"  # a teacher file goes with its shard
            if shard not in keep:
                path.unlink(missing_ok=True)
                Path(str(path) + ".json").unlink(missing_ok=True)
                removed += 1
    return removed


def format_counts(counts: dict) -> str:
    keys = ("identities", "images_read", "faces_aligned", "no_face", "several_faces", "resized_no_face",
            "fallback_dlib_landmarks", "unreadable", "non_image_files", "empty_identities", "identities_reused")
    return ", ".join(f"{k}={counts.get(k, 0)}" for k in keys)


def main(argv: list[str] | None = None) -> int:
    from trainer import config as config_lib

    parser = cliargs.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="experiment YAML: everything its runs read (data.source, data.sources, "
                                         "the teacher's embeddings) at its model's input size")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    parser.add_argument("--source", help="only this identity-folder root or tfds:<name>, no teacher")
    parser.add_argument("--size", type=int, help="crop size in px (default: the model's input size)")
    parser.add_argument("--cache-dir", help="overrides data.cache_dir")
    parser.add_argument("--prune", action="store_true", help="delete cached shards no manifest uses, then exit")
    args = parser.parse_args(argv)
    if args.size is not None and args.size < 0:
        parser.error(f"argument --size: must be a number of pixels (0 = the model's input size), got {args.size}")
    try:
        cfg = config_lib.load(args.config, args.set)
        if args.cache_dir:
            cfg.data.cache_dir = args.cache_dir
        if args.prune:
            print(f"removed {prune(config_lib.resolve_path(cfg.data.cache_dir))} unused shards")
            return 0
        if args.size:
            cfg.model.input_size = args.size
        if not args.source and not cfg.data.source:
            raise ConfigError("no dataset given: pass --source DIR (an identity-folder root) or set data.source")
        if args.source:  # one folder, without the teacher
            size = cfg.model.input_size or _native_size(cfg.model.name)
            manifests = [prepare(args.source, cfg.data.cache_dir, size, cfg.data.align, cfg.data.max_identities,
                                 cfg.data.prepare_workers, cfg.ray.address)]
        else:
            from trainer.plan import prepare_all

            manifests = prepare_all(cfg)
    except (ConfigError, DatasetError) as exc:
        print(f"error: {cliargs.one_line(exc)}", file=sys.stderr)
        return 2
    for manifest in manifests:
        print(f"prepared {manifest['dir']}: {format_counts(manifest['counts'])}")
    return 0


def _native_size(model: str) -> int:
    # trainer.models imports TensorFlow (seconds, and its start-up lines): only when a size is needed
    from trainer.models import NATIVE_INPUT_SIZE

    return NATIVE_INPUT_SIZE[model]


if __name__ == "__main__":
    sys.exit(main())
