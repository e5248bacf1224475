"""Export an embedding model (+ a gallery) as a new TF-Serving version.

    python -m serving.export --run runs/<run> --base-path exports [--name facenet]   # empty gallery
    python -m serving.export --run runs/<run> --tflite facenet.tflite [--quantize none|float16|int8]
                             [--representative RUN_OR_DIR]      # edge export (serving/tflite.py)
    python -m serving.export --run runs/<run> --onnx facenet.onnx     # serving/onnx_export.py

``export(model, base_path, name, gallery_embeddings, gallery_names, threshold, ...)`` is the
library call: serving is handed a Keras model and a gallery and knows nothing of where they came
from. An enrolment home's production model and gallery are exported by enroll
(``enroll export-serving``, enroll/serving_export.py), which reads the home and calls ``export``.

Each export writes ``<base>/<name>/<version>/`` (see ``serving.versions``: versions only increase,
written aside and renamed into place) holding a SavedModel with the signatures of ``serving.module``,
``assets.extra/metadata.json`` (the ``metadata`` signature's content, for people and scripts) and
``assets.extra/tf_serving_warmup_requests`` (TF-Serving replays them at load, so the first real
request does not pay for graph initialisation).

Enrolment changes only the gallery, never the network, so ``export`` keeps the traced serving
module of each Keras model, and after its first (full) export of a module writes each further
version gallery-only (serving/gallery_versions.py): the first export's graph bytes, the network's
weights hard-linked from the previous version, only the gallery variables written. About 40 ms
instead of 1.4 s for nn4_small2; ``gallery_only=False`` forces a full ``tf.saved_model.save``.
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from serving import versions
from serving.models_config import write_models_config
from trainer import cliargs

DEFAULT_TOP_K = 5
_MODULES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_TEMPLATES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # FaceNetServing -> NetworkTemplate
_LOCK = threading.Lock()


def serving_module(model, image_size: int | None = None):
    """The (cached) ``FaceNetServing`` of ``model``; ``image_size`` only for a model whose input
    size is not fixed."""
    from serving.module import FaceNetServing

    fixed = model.input_shape[1]
    if image_size and fixed and int(image_size) != fixed:
        raise ValueError(f"image_size {image_size} differs from the model's fixed input size {fixed}")
    if not (fixed or image_size):
        raise ValueError("the model's input size is not fixed: pass image_size")
    key = int(fixed or image_size)
    cached = _MODULES.get(model)
    if cached is None or cached.image_size != key:
        cached = _MODULES[model] = FaceNetServing(model, image_size=key)
    return cached


def _write_warmup(directory: Path, model_name: str, image_size: int) -> None:
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:  # the [serving] extra is optional for exporting
        return
    import tensorflow as tf

    extra = directory / "assets.extra"
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        for signature in ("serving_default", "identify"):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, image_size, image_size, 3), np.float32)))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def export(model, base_path, model_name: str = "facenet", gallery_embeddings=None, gallery_names=None,
           threshold: float | None = None, image_size: int | None = None, version: int | None = None,
           top_k: int = DEFAULT_TOP_K, metadata: dict | None = None, gallery_only: bool = True) -> Path:
    """Export ``model`` (pixels [0, 255] -> L2-normalised embeddings) with a gallery as a new version.

    ``gallery_embeddings`` [G, D] and ``gallery_names`` [G] are parallel (several faces per person
    allowed); None is an empty gallery (identify answers unknown). ``threshold`` None disables the
    unknown answer (closed-set identification). ``metadata`` adds JSON-able entries to the
    ``metadata`` signature. ``gallery_only`` (default) writes a gallery-only version when this
    process already made a full export of the model. Returns the published version directory.
    """
    import tensorflow as tf

    from serving.gallery_versions import NetworkTemplate

    with _LOCK:  # the cached module holds one gallery at a time
        module = serving_module(model, image_size)
        template = _TEMPLATES.get(module) if gallery_only else None
        faces, people = module.set_gallery(gallery_embeddings, gallery_names,
                                           math.inf if threshold is None else threshold, top_k)
        meta = {"model_name": model_name, "architecture": model.name, "image_size": module.image_size,
                "embedding_dim": module.embedding_dim, "threshold": None if threshold is None else float(threshold),
                "top_k": int(top_k), "gallery_faces": faces, "gallery_people": people,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(metadata or {})}

        written: dict = {}

        def write(directory: Path, number: int) -> None:
            full = {**meta, "version": number}
            module.set_metadata(full)
            if template is not None:
                written["inode"] = template.write_version(directory, module)
            else:
                tf.saved_model.save(module, str(directory), signatures=module.signatures())
                written["template"] = NetworkTemplate.from_export(directory)
            (directory / "assets.extra").mkdir(exist_ok=True)
            (directory / "assets.extra" / "metadata.json").write_text(json.dumps(full, indent=1, sort_keys=True))
            _write_warmup(directory, model_name, module.image_size)

        path = versions.publish(base_path, model_name, write, version)
        if template is not None:
            template.published(path, written["inode"])
        else:
            _TEMPLATES[module] = written["template"]
        return path


# ------------------------------------------------------------------------------- command line
def _threshold_of_run(run_dir: Path) -> tuple[float | None, str]:
    """The run's calibrated threshold: the last validation's best, else the test split's."""
    from trainer import checkpoints, run_results

    latest = checkpoints.resolve_checkpoint(run_dir) if checkpoints.latest_checkpoint(run_dir) else None
    state = json.loads((latest / "state.json").read_text()) if latest else {}
    if "val_best_threshold" in state.get("metrics", {}):
        return float(state["metrics"]["val_best_threshold"]), f"validation of {latest.name}"
    test = run_results.load(run_dir).get("test", {}) if run_results.finished(run_dir) else {}
    if "best_threshold" in test:
        return float(test["best_threshold"]), "test split"
    return None, "none calibrated"


def _from_run(args) -> dict:
    from trainer import checkpoints

    model, cfg, plan = checkpoints.load_run(args.run)
    threshold, source = _threshold_of_run(Path(args.run))
    return {"model": model, "gallery_embeddings": None, "gallery_names": None, "threshold": threshold,
            "metadata": {"source_run": str(args.run), "threshold_source": source,
                         "face_template": plan.face_template}}  # the framing clients must align faces to


def _export_edge(model, args) -> None:
    """``--tflite`` and ``--onnx``: all converted in memory first, then each written and renamed into
    place, so a refusal or failed conversion leaves no file."""
    from serving import onnx_export, tflite

    start, files = time.perf_counter(), []
    for path in filter(None, (args.tflite, args.onnx)):
        if Path(path).is_dir():
            raise ValueError(f"{path} is a directory: give a file name (e.g. facenet.tflite)")
    if args.tflite is not None:
        crops = tflite.representative_crops(args.representative, model.input_shape[1]) if args.representative else None
        calibrated = f", calibrated on {len(crops)} crops" if crops is not None else ""
        files.append((args.tflite, tflite.convert(model, args.quantize, crops), f"TFLite, {args.quantize}{calibrated}"))
    if args.onnx is not None:
        files.append((args.onnx, onnx_export.convert(model), "ONNX, float32"))
    for path, data, what in files:
        tflite.write_atomically(Path(path), data)
        print(f"wrote {path} ({what}, {len(data) / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = cliargs.ArgumentParser(description="Export a FaceNet model as a new TF-Serving version.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run directory (exported with an empty gallery)")
    source.add_argument("--home", help="moved: `enroll export-serving --home DIR` exports a home")
    parser.add_argument("--base-path", help="export base path (required unless --tflite or --onnx)")
    parser.add_argument("--tflite", help="write a TFLite (LiteRT) model of the run here (serving/tflite.py)")
    parser.add_argument("--quantize", choices=("none", "float16", "int8"), default="none",
                        help="TFLite weights: none (float32), float16, or int8 (needs --representative)")
    parser.add_argument("--representative", help="int8 calibration crops: a run dir (its training shards), "
                                                 "a folder of .tfrecord shards or of aligned face crops")
    parser.add_argument("--onnx", help="write an ONNX model of the run here (serving/onnx_export.py)")
    parser.add_argument("--name", default="facenet", help="model name (default facenet)")
    parser.add_argument("--threshold", type=float, help="override the calibrated threshold")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    parser.add_argument("--models-config", help="also write TF-Serving's models.config here")
    parser.add_argument("--config-base-path", help="base path as the server sees it (default: --base-path)")
    parser.add_argument("--versions-to-keep", type=int, default=2)
    args = parser.parse_args(argv)
    if args.home is not None:  # a home is enroll's to read; serving is handed its model and gallery
        print(f"error: serving.export no longer reads a home: run `enroll export-serving --home "
              f"{cliargs.one_line(args.home)}`", file=sys.stderr)
        return 2
    if args.base_path is None and args.tflite is None and args.onnx is None:
        parser.error("--base-path (or --tflite / --onnx) is required with --run")
    if args.tflite is None and (args.quantize != "none" or args.representative):
        parser.error("--quantize and --representative go with --tflite")
    if args.tflite is not None and (args.quantize == "int8") != bool(args.representative):
        parser.error("--quantize int8 needs representative data: --representative RUN_OR_DIR of aligned crops"
                     if args.quantize == "int8" else "--representative is only used with --quantize int8")
    base = Path(args.base_path) if args.base_path else None
    try:
        spec = _from_run(args)
        if args.tflite is not None or args.onnx is not None:
            _export_edge(spec["model"], args)
            if base is None:
                return 0
        if args.threshold is not None:
            spec["threshold"], spec["metadata"]["threshold_source"] = args.threshold, "command line"
        start = time.perf_counter()
        path = export(spec["model"], base, args.name, spec["gallery_embeddings"], spec["gallery_names"],
                      spec["threshold"], top_k=args.top_k, metadata=spec["metadata"])
        if args.models_config:
            write_models_config(args.config_base_path or base, args.models_config, args.name, args.versions_to_keep)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {cliargs.one_line(exc)}", file=sys.stderr)
        return 2
    print(f"exported {args.name} version {path.name} to {path} (0 gallery faces, threshold "
          f"{spec['threshold']}, {spec['metadata']['threshold_source']}) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
