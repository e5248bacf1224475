"""Serving a home: its production model (or another version) and that version's gallery, handed to
``serving.export`` as a new TF-Serving version under ``<home>/serving/<name>/``.

    enroll export-serving [--model-version N] [--name facenet] [--threshold T] [--top-k K]
                          [--models-config PATH [--config-base-path /models] [--versions-to-keep 2]]
    enroll export-serving --watch [--debounce 2] [--poll 1] [--keep-versions 4] [--heartbeat FILE]  # serving_sync.py

Promotions (enroll/retrain_job.py) and remove-person (enroll/forget.py) call ``export_home``; the
command catches serving up after an interrupted promotion. serving/ knows nothing of a home: what
it exports is what this module reads through enroll/home.py. Exports go only under the home's
``serving/``, the one place remove-person looks for served copies of a person.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from enroll import home as layout
from enroll.gallery import GalleryError

DEFAULT_NAME = "facenet"


def export_spec(home, model_version: int | None = None, notes: list[str] | None = None) -> dict:
    """The model, gallery, τ and metadata of ``model_version`` (default: production) of ``home``."""
    from enroll.model_versions import production

    if model_version is None:
        model_version, meta, model = production(home)  # cached per process: a re-export does not re-trace
    else:
        model, meta = _load_version(home, model_version)
    from enroll.backends import gallery_rows

    names, embeddings = gallery_rows(home, model_version, notes)
    threshold = meta.get("threshold")  # None: closed-set identification, never "unknown"
    return {"model": model, "gallery_names": names or None, "gallery_embeddings": embeddings if names else None,
            "threshold": None if threshold is None else float(threshold),
            "metadata": {"model_version": model_version, "threshold_source": str(layout.meta_file(".", model_version)),
                         "face_template": layout.face_template(meta),  # the framing clients must align to
                         **{k: meta[k] for k in ("far_target", "source_run") if k in meta}}}


def _load_version(home, version: int) -> tuple[object, dict]:
    import tf_keras as keras

    import trainer.models  # noqa: F401  (registers the custom layers the SavedModel names)
    from enroll.model_versions import ModelError

    if not layout.saved_model_dir(home, version).is_dir():
        raise ModelError(f"no model version {version} in {home}")
    try:
        meta = layout.read_meta(home, version)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model version {version}'s meta.json is unreadable ({exc.__class__.__name__})") from None
    return keras.models.load_model(str(layout.saved_model_dir(home, version)), compile=False), meta


def export_home(home, model_name: str = DEFAULT_NAME, model_version: int | None = None,
                notes: list[str] | None = None, threshold: float | None = None, top_k: int | None = None,
                metadata: dict | None = None) -> Path:
    """Publish ``home``'s production model (or ``model_version``) and its gallery as
    ``<home>/serving/<model_name>/<next>/``; ``threshold`` overrides the version's τ, ``metadata``
    adds entries to the version's metadata (enroll/serving_sync.py records the gallery's state)."""
    return _publish(home, model_name, model_version, notes, threshold, top_k, metadata)[0]


def _publish(home, model_name, model_version, notes, threshold, top_k, metadata=None) -> tuple[Path, dict]:
    from serving.export import DEFAULT_TOP_K, export

    spec = export_spec(home, model_version, notes)
    spec["metadata"].update(metadata or {})
    if threshold is not None:
        spec["threshold"], spec["metadata"]["threshold_source"] = threshold, "command line"
    path = export(spec["model"], layout.serving_dir(home), model_name, spec["gallery_embeddings"],
                  spec["gallery_names"], spec["threshold"], top_k=top_k or DEFAULT_TOP_K, metadata=spec["metadata"])
    return path, spec


# ------------------------------------------------------------------------------- command line
def add_parser(sub, common) -> None:
    p = sub.add_parser("export-serving", parents=[common],
                       help="export the production model and its gallery as a new TF-Serving version")
    p.add_argument("--model-version", type=int, metavar="N", help="this model version, not PRODUCTION's")
    p.add_argument("--name", default=DEFAULT_NAME, help=f"TF-Serving model name (default {DEFAULT_NAME})")
    p.add_argument("--threshold", type=float, help="override the version's calibrated τ")
    p.add_argument("--top-k", type=int, default=None, help="people returned by identify (default 5)")
    p.add_argument("--models-config", metavar="PATH", help="also write TF-Serving's models.config here")
    p.add_argument("--config-base-path", metavar="DIR",
                   help="the export base path as the server sees it (default: $FACENET_HOME/serving)")
    p.add_argument("--versions-to-keep", type=int, default=2, help="versions models.config keeps loaded")
    p.add_argument("--watch", action="store_true",
                   help="keep running: export gallery-only versions whenever the gallery or PRODUCTION changes")
    p.add_argument("--debounce", type=float, default=2.0, metavar="S", help="--watch: at most one version per S s")
    p.add_argument("--poll", type=float, default=1.0, metavar="S", help="--watch: look for changes every S s")
    p.add_argument("--keep-versions", type=int, default=4, metavar="N", help="--watch: delete all but the newest N")
    p.add_argument("--heartbeat", metavar="FILE", help="--watch: touch FILE after every poll (for a liveness probe)")


def _check(args) -> None:
    """Bad arguments are refused before anything is loaded or written."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", args.name):  # a folder, and a URL path segment
        raise GalleryError(f"--name must be letters, digits, '.', '_' or '-' (a TF-Serving model name), got {args.name!r}")
    if args.top_k is not None and not 1 <= args.top_k < 2 ** 31:  # (an int32 variable in the export)
        raise GalleryError(f"--top-k must be from 1 to {2 ** 31 - 1}, got {args.top_k}")
    if args.versions_to_keep < 1:
        raise GalleryError(f"--versions-to-keep must be at least 1, got {args.versions_to_keep}")
    if args.threshold is not None and not args.threshold >= 0:  # (NaN fails too; inf = never unknown)
        raise GalleryError(f"--threshold must be a distance >= 0, got {args.threshold}")
    if args.watch and (args.model_version is not None or args.threshold is not None or args.top_k is not None):
        raise GalleryError("--watch exports the production model as it is: drop --model-version, --threshold, --top-k")
    if not (0 <= args.debounce <= 3600 and 0.05 <= args.poll <= 3600 and args.keep_versions >= 1):
        raise GalleryError("--debounce must be 0-3600 s, --poll 0.05-3600 s and --keep-versions at least 1")


def cmd_export_serving(args: argparse.Namespace, home: Path, notes: list[str]):
    """``enroll export-serving``: (JSON result, text lines) as ``enroll.commands`` returns them."""
    from serving.models_config import write_models_config

    _check(args)
    if args.watch:
        from enroll.serving_sync import cmd_watch

        return cmd_watch(args, home)
    gallery_notes: list[str] = []
    start = time.perf_counter()
    try:
        path, spec = _publish(home, args.name, args.model_version, gallery_notes, args.threshold, args.top_k)
        if args.models_config:
            write_models_config(args.config_base_path or layout.serving_dir(home), args.models_config,
                                args.name, args.versions_to_keep)
    except GalleryError:  # (a ValueError too) already says what is wrong: no such model version, ...
        raise
    except (OSError, ValueError) as exc:  # an unwritable base path, a gallery the model cannot take
        raise GalleryError(f"export failed: {exc}") from None
    notes.extend(f"note: {note}; exported an empty gallery" for note in gallery_notes)
    names, meta = spec["gallery_names"] or [], spec["metadata"]
    result = {"name": args.name, "version": int(path.name), "path": str(path), "model_version": meta["model_version"],
              "gallery_faces": len(names), "gallery_people": len(set(names)), "threshold": spec["threshold"],
              "threshold_source": meta["threshold_source"], "seconds": round(time.perf_counter() - start, 2)}
    return result, [f"exported {args.name} version {path.name} to {path} (model version {result['model_version']}, "
                    f"{result['gallery_faces']} gallery faces, threshold {result['threshold']}, "
                    f"{result['threshold_source']}) in {result['seconds']:.1f} s"]
