"""Production models: register a trained run as version N, calibrate τ, switch PRODUCTION safely.

Layout (enroll/layout.md; its paths and files are enroll/home.py's): ``models/<N>/model`` (Keras
SavedModel) + ``models/<N>/meta.json`` and a ``PRODUCTION`` file holding N. ``register_run`` fills
in every enrolled face's embedding for N *before* PRODUCTION names N, and makes the switch under
the gallery's write lock once no face lacks a version-N vector, while enrolments check (``guard``)
that the model they embedded with is still the production one. Hence every face always has a
vector for the production version and identify never compares vectors of two models.
"""
from __future__ import annotations

import math
import time
import warnings
import weakref
from pathlib import Path

import numpy as np

import enroll  # noqa: F401  (tf-keras before TensorFlow)
from enroll.crops import decode_png
from enroll.gallery import GalleryError
from enroll.home import (face_template, production_file, read_meta, read_production, resolve_home, saved_model_dir,
                         store_version, write_production)
from trainer.run_plan import RunPlan

_LOADED: dict[Path, tuple[int, dict, object]] = {}  # home -> (version, meta, model), per process


class ModelError(GalleryError):
    """No usable production model, or a run that cannot become one; one-line message."""


class StaleModel(GalleryError):
    """The production model changed while an enrolment was computing its embeddings."""


def production_version(home) -> int | None:
    try:
        return read_production(resolve_home(home))
    except ValueError:
        raise ModelError(f"{production_file(resolve_home(home))} does not hold a version number") from None


def production_meta(home) -> tuple[int, dict]:
    """(version, meta.json) of the production model, without loading the model."""
    home = resolve_home(home)
    version = production_version(home)
    if version is None:
        raise ModelError(f"no production model in {home} yet: run `enroll init --run RUN_DIR` first")
    try:
        return version, read_meta(home, version)
    except (OSError, ValueError) as exc:
        raise ModelError(f"production model {version} is unreadable ({exc.__class__.__name__}); "
                         "register a run again with `enroll init --run RUN_DIR`") from None


def production(home) -> tuple[int, dict, object]:
    """(version, meta, keras model) of the production model; loaded once per process and version."""
    import tf_keras as keras

    import trainer.models  # noqa: F401  (registers the custom layers the SavedModel names)

    home = resolve_home(home)
    version, meta = production_meta(home)
    cached = _LOADED.get(home)
    if cached is None or cached[0] != version:
        model = keras.models.load_model(str(saved_model_dir(home, version)), compile=False)
        _LOADED[home] = cached = (version, meta, model)
    return cached


def guard_for(home, version: int):
    """A ``Gallery.add_person`` guard: refuse to commit vectors of a model no longer in production."""
    def guard():
        if production_version(home) != version:
            raise StaleModel(f"production model changed from version {version} during the enrolment")
    return guard


_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> None (called once) | its graph


def forward(model):
    """``model``'s inference call: eager the first time a process calls it, a traced graph from the
    second call on. Eager Keras runs layer by layer from Python, 143 ms a photo for dlib_resnet here
    against 14 ms as a graph; tracing costs ~0.9 s once, which a one-photo command would not win back."""
    if model not in _FORWARD:
        _FORWARD[model] = None
        return lambda images: model(images, training=False)
    if _FORWARD[model] is None:
        from trainer.models import inference_graph

        _FORWARD[model] = inference_graph(model)
    return _FORWARD[model]


def embed_pixels(model, pixels, batch_size: int = 128) -> np.ndarray:
    """RGB uint8 crops (n, s, s, 3) -> L2-normalised float32 embeddings (n, d)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if not len(pixels):
        return np.zeros((0, model.output_shape[-1]), np.float32)
    call = forward(model)
    return np.concatenate([np.asarray(call(pixels[i:i + batch_size]))
                           for i in range(0, len(pixels), batch_size)]).astype(np.float32)


def calibrate(model, cfg, plan: RunPlan, far_target: float) -> dict:
    """τ on the run's validation identities (test identities if it has none) at ``far_target``.

    FAR is only resolvable with at least 1/far_target different-person pairs; with fewer (small
    validation splits) the best-accuracy threshold is used instead, and ``method`` says so.
    """
    from trainer import pipeline
    from trainer.evaluate import embed, verification
    from trainer.evaluation import lfw_protocol

    split = "val" if plan.shards.val else "test"
    if not getattr(plan.shards, split):
        raise ModelError("the run has no validation or test identities to calibrate τ on")
    data = pipeline.ordered_images(getattr(plan.shards, split), plan.image_size, cfg.eval.eval_batch_size)
    embeddings, identities, sources = embed(model, data)
    folds = max(2, cfg.eval.folds)
    # Enough pairs per fold for the FAR target to be resolvable when the split allows it.
    per_fold = max(cfg.eval.pairs_per_fold, math.ceil(2 / (far_target * folds)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "folds share identities" on small splits: expected here
            _, dist, same = verification(embeddings, identities, sources, folds, per_fold, far_target)
    except ValueError as exc:
        raise ModelError(f"cannot calibrate τ on the run's {split} split: {exc}") from None
    different = int((~same).sum())
    best, accuracy = lfw_protocol.best_threshold(dist, same)
    if different >= 1 / far_target:
        threshold, method = lfw_protocol.threshold_at_far(dist, same, far_target), "far"
    else:
        threshold, method = best, "best_accuracy"
    val, far = lfw_protocol.calculate_val_far(threshold, dist, same)
    return {"threshold": float(threshold), "method": method, "split": split, "pairs": int(len(dist)),
            "different_pairs": different, "val_at_threshold": val, "far_at_threshold": far,
            "best_accuracy_threshold": float(best), "best_accuracy": float(accuracy)}


def register_run(run_dir, home=None, far_target: float = 1e-3, gallery=None, gallery_version: int | None = None) -> int:
    """Make a trained run the production model; returns its new version number.

    ``gallery_version`` is the class-change sequence number the run's training data reflects:
    ``enroll status`` counts the changes after it, i.e. what a retraining would have to learn or
    forget. Default: the run plan's ``gallery_version`` (a retraining job records the gallery
    snapshot it trained on there), else 0, since a run trained elsewhere has seen no gallery class.
    """
    from trainer import checkpoints
    from enroll.backends import open_gallery

    home = resolve_home(home)
    try:
        model, cfg, plan = checkpoints.load_run(run_dir)
        checkpoint = checkpoints.resolve_checkpoint(run_dir)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load run {run_dir}: {exc}") from None
    calibration = calibrate(model, cfg, plan, far_target)
    own_gallery = gallery is None
    gallery = gallery if gallery is not None else open_gallery(home, create=True)
    try:
        meta = {"model_name": cfg.model.name, "image_size": plan.image_size, "face_template": plan.face_template,
                "embedding_dim": int(model.output_shape[-1]), "threshold": calibration["threshold"],
                "far_target": far_target, "threshold_method": calibration["method"], "calibration": calibration,
                "source_run": str(Path(run_dir).resolve()), "source_checkpoint": str(checkpoint),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "gallery_version": int(plan.gallery_version if gallery_version is None else gallery_version)}
        return make_production(home, model, meta, gallery)
    finally:
        if own_gallery:
            gallery.close()


def make_production(home, model, meta: dict, gallery) -> int:
    """Store ``model`` as a new version and switch ``PRODUCTION`` to it once every enrolled face has
    its vector; returns the version. Enrolments keep committing meanwhile (for the old version, whose
    faces the next pass embeds); the switch happens under the gallery's write lock, so none commits
    in between. Every identify and enrolment uses one version throughout (enroll/service.py)."""
    home = resolve_home(home)
    _check_framing(home, meta, gallery)
    version = store_version(home, model, meta)
    for _ in range(20):  # each pass embeds faces enrolled meanwhile; normally one pass
        backfill(gallery, version, model, meta["image_size"], saved_model_dir(home, version))
        if gallery.switch_if_complete(version, lambda: write_production(home, version)):
            return version
    raise ModelError(f"could not complete embeddings for version {version}: enrolments keep arriving "
                     "or crops are missing; run `enroll status` and try again")


def _check_framing(home, meta: dict, gallery) -> None:
    """Refuse a model whose face framing differs from production's while people are enrolled: their
    stored crops are in production's framing and the photos are not kept, so the new model could
    only be fed faces framed as it never saw them."""
    if production_version(home) is None:
        return
    _, current = production_meta(home)
    old, new = face_template(current), face_template(meta)
    people = gallery.list_people() if old != new else []
    if people:
        raise ModelError(f"this model expects {new}-framed faces but the {len(people)} people enrolled in {home} "
                         f"were aligned to {old}'s framing: register it in a new home and enrol them again")


def backfill(gallery, version: int, model, image_size: int, model_dir: Path | None = None) -> int:
    """Embed every face that has no vector for ``version`` yet; returns vectors stored.

    Inside a Ray job (the retraining job has Ray up) the chunks are embedded by Ray tasks that
    load ``model_dir`` once per worker: re-embedding a large gallery after a promotion is a Ray
    batch job. Otherwise, and always for the database writes, it runs in this process.
    """
    faces = gallery.faces_without(version)
    chunks = []
    for start in range(0, len(faces), 256):
        ids, crops = [], []
        for face in faces[start:start + 256]:
            try:
                crops.append(gallery.crop(face.sha256))
                ids.append(face.id)
            except GalleryError:
                continue  # removed since faces_without was read
        if ids:
            chunks.append((ids, crops))
    if model_dir is not None and chunks and _ray_is_up():
        import ray

        task = ray.remote(num_cpus=1)(embed_crops)
        vectors = ray.get([task.remote(str(model_dir), crops, image_size) for _, crops in chunks])
    else:
        vectors = [embed_pixels(model, np.stack([decode_png(c, image_size) for c in crops])) for _, crops in chunks]
    return sum(gallery.set_embeddings(version, dict(zip(ids, v))) for (ids, _), v in zip(chunks, vectors))


_WORKER_MODELS: dict[str, object] = {}  # model dir -> model, in Ray workers


def embed_crops(model_dir: str, crops: list[bytes], image_size: int) -> np.ndarray:
    """Embeddings of PNG crops by the SavedModel in ``model_dir`` (loaded once per process)."""
    import tf_keras as keras

    if model_dir not in _WORKER_MODELS:
        _WORKER_MODELS[model_dir] = keras.models.load_model(model_dir, compile=False)
    return embed_pixels(_WORKER_MODELS[model_dir], np.stack([decode_png(c, image_size) for c in crops]))


def _ray_is_up() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()
