"""serving.export: the SavedModel's signatures (checked with saved_model_cli, TF-Serving's loader
path), versioning, the gallery, models.config and the command line."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from serving import versions
from serving.client import InProcessClient
from serving.export import export, main, serving_module
from serving.models_config import write_models_config
from serving.module import SIGNATURES

SIZE = 32
NAMES = ["ann", "bob", "cy", "ann"]  # ann has two enrolled faces


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model, its gallery (embeddings of 4 images) and one export of it."""
    from trainer.models import build_model

    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = build_model("tiny", input_size=SIZE)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, SIZE, SIZE, 3)).astype(np.float32)
    emb = model(images, training=False).numpy()
    # Threshold between "enrolled" (distance ~0) and the two strangers (images 4, 5).
    strangers = np.linalg.norm(emb[4:, None] - emb[None, :4], axis=2).min(axis=1)
    assert strangers.min() > 0.005
    threshold = float(strangers.min() / 2)
    base = tmp_path_factory.mktemp("export")
    path = export(model, base, gallery_embeddings=emb[:4], gallery_names=NAMES, threshold=threshold, top_k=2)
    return {"model": model, "images": images, "emb": emb, "threshold": threshold, "base": base, "path": path}


def expected_identify(emb, gallery, names, k):
    """Per-person minimum distances ranked in numpy: the reference for ``identify``."""
    people = sorted(set(names))
    d = np.linalg.norm(emb[:, None] - gallery[None], axis=2)
    per_person = np.stack([d[:, [i for i, n in enumerate(names) if n == p]].min(axis=1) for p in people], axis=1)
    order = np.argsort(per_person, axis=1)[:, :k]
    return [[people[j] for j in row] for row in order], np.take_along_axis(per_person, order, axis=1)


def saved_model_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_saved_model_cli_show_and_run_every_signature(setup, tmp_path):
    """`show --all` lists each signature with dtypes and shapes; `run` (a TF1 session, as
    TF-Serving loads it) of each gives the Keras model's answers."""
    model, images, emb, path = setup["model"], setup["images"], setup["emb"], str(setup["path"])
    import cv2

    uint8 = images.astype(np.uint8)
    big = np.repeat(np.repeat(uint8, 2, axis=1), 2, axis=2)  # 64 px: resized in the graph
    pngs = np.array([cv2.imencode(".png", im[:, :, ::-1])[1].tobytes() for im in uint8], dtype=object)
    inputs = {"serving_default": ("images", images), "embed_uint8": ("images", big),
              "embed_jpeg": ("image_bytes", pngs), "identify": ("images", images),
              "identify_jpeg": ("image_bytes", pngs)}
    procs = {"show": saved_model_cli("show", "--dir", path, "--all")}
    for sig, (key, value) in inputs.items():
        np.save(tmp_path / f"{sig}.npy", value, allow_pickle=True)
        procs[sig] = saved_model_cli("run", "--dir", path, "--tag_set", "serve", "--signature_def", sig,
                                     "--inputs", f"{key}={tmp_path / sig}.npy", "--outdir", str(tmp_path / sig))
    procs["metadata"] = saved_model_cli("run", "--dir", path, "--tag_set", "serve", "--signature_def", "metadata",
                                        "--input_exprs", 'keys=["threshold","all","missing"]',
                                        "--outdir", str(tmp_path / "metadata"))
    logs = {name: p.communicate(timeout=240)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"saved_model_cli {name} failed:\n{logs[name][-3000:]}"

    show = logs["show"]
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:\n(.*?)Method name is", show, re.S))
    assert set(SIGNATURES) <= set(blocks)
    expect = {"serving_default": [("images", "DT_FLOAT", "(-1, -1, -1, 3)"), ("embeddings", "DT_FLOAT", "(-1, 128)")],
              "embed_uint8": [("images", "DT_UINT8", "(-1, -1, -1, 3)"), ("embeddings", "DT_FLOAT", "(-1, 128)")],
              "embed_jpeg": [("image_bytes", "DT_STRING", "(-1)"), ("embeddings", "DT_FLOAT", "(-1, 128)")],
              "identify": [("images", "DT_FLOAT", "(-1, -1, -1, 3)"), ("names", "DT_STRING", "(-1, -1)"),
                           ("distances", "DT_FLOAT", "(-1, -1)"), ("unknown", "DT_BOOL", "(-1)")],
              "identify_jpeg": [("image_bytes", "DT_STRING", "(-1)"), ("names", "DT_STRING", "(-1, -1)")],
              "metadata": [("keys", "DT_STRING", "(-1)"), ("values", "DT_STRING", "(-1)")]}
    for sig, tensors in expect.items():
        for name, dtype, shape in tensors:
            assert re.search(rf"\['{name}'\] tensor_info:\s+dtype: {dtype}\s+shape: {re.escape(shape)}", blocks[sig]), \
                (sig, name, blocks[sig])

    def out(sig, key):
        return np.load(tmp_path / sig / f"{key}.npy", allow_pickle=True)

    as_float = uint8.astype(np.float32)
    np.testing.assert_allclose(out("serving_default", "embeddings"), emb, atol=1e-5)
    resized = model(tf.image.resize(big.astype(np.float32), (SIZE, SIZE)), training=False).numpy()
    np.testing.assert_allclose(out("embed_uint8", "embeddings"), resized, atol=1e-5)
    np.testing.assert_allclose(out("embed_jpeg", "embeddings"), model(as_float, training=False).numpy(), atol=1e-5)

    names, dist = expected_identify(emb, emb[:4], NAMES, k=2)
    assert [[n.decode() for n in row] for row in out("identify", "names")] == names
    np.testing.assert_allclose(out("identify", "distances"), dist, atol=1e-3)  # sqrt near 0 amplifies rounding
    assert out("identify", "unknown").tolist() == [False] * 4 + [True] * 2
    assert [row[0].decode() for row in out("identify_jpeg", "names")][:4] == ["ann", "bob", "cy", "ann"]
    assert out("identify_jpeg", "unknown").tolist()[:4] == [False] * 4

    values = [v.decode() for v in out("metadata", "values")]
    assert json.loads(values[0]) == pytest.approx(setup["threshold"])
    meta = json.loads(values[1])
    assert meta["image_size"] == SIZE and meta["gallery_faces"] == 4 and meta["gallery_people"] == 3
    assert meta["version"] == int(Path(path).name) and meta["top_k"] == 2 and values[2] == ""
    assert json.loads((Path(path) / "assets.extra" / "metadata.json").read_text()) == meta


def test_warmup_requests_replay(setup):
    """TF-Serving replays assets.extra/tf_serving_warmup_requests at load; each must be valid."""
    from tensorflow_serving.apis import prediction_log_pb2

    loaded = tf.saved_model.load(str(setup["path"]))
    records = list(tf.data.TFRecordDataset(str(setup["path"] / "assets.extra" / "tf_serving_warmup_requests")))
    assert len(records) == 2
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        assert request.model_spec.name == "facenet"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        assert inputs["images"].shape == (1, SIZE, SIZE, 3)
        loaded.signatures[request.model_spec.signature_name](**{k: tf.constant(v) for k, v in inputs.items()})


def test_versions_increase_and_partial_exports_stay_invisible(setup, tmp_path):
    model = setup["model"]
    first = export(model, tmp_path)
    assert first.name == "1"
    (tmp_path / "probe").mkdir()  # a version is as readable as any directory (not mkdtemp's 0700)
    assert first.stat().st_mode == (tmp_path / "probe").stat().st_mode
    # A crashed exporter's leftovers (hidden temp dir) and foreign dirs are never versions.
    partial = tmp_path / "facenet" / f"{versions.TMP_PREFIX}7-dead"
    (partial / "variables").mkdir(parents=True)
    (partial / "saved_model.pb").write_bytes(b"half written")
    (tmp_path / "facenet" / "notes").mkdir()
    assert export(model, tmp_path).name == "2"
    assert versions.list_versions(tmp_path, "facenet") == [1, 2]
    assert InProcessClient(tmp_path).version == 2
    with pytest.raises(ValueError, match="greater than the latest"):
        export(model, tmp_path, version=2)
    assert export(model, tmp_path, version=10).name == "10"
    assert export(model, tmp_path).name == "11"


@pytest.mark.parametrize("gallery_only", [False, True], ids=["full", "gallery-only"])
def test_failed_export_publishes_nothing(setup, tmp_path, monkeypatch, gallery_only):
    from serving.gallery_versions import NetworkTemplate

    export(setup["model"], tmp_path)

    def crash(_, directory, *args, **kwargs):
        (Path(directory) / "saved_model.pb").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    monkeypatch.setattr(NetworkTemplate, "write_version", crash)
    with pytest.raises(OSError, match="disk full"):
        export(setup["model"], tmp_path, gallery_only=gallery_only)
    assert sorted(p.name for p in (tmp_path / "facenet").iterdir()) == ["1"]


def test_gallery_update_reuses_the_traced_module(setup, tmp_path):
    model, images, emb = setup["model"], setup["images"], setup["emb"]
    module = serving_module(model)
    v1 = export(model, tmp_path, gallery_embeddings=emb[:2], gallery_names=["ann", "bob"], threshold=0.01)
    v2 = export(model, tmp_path, gallery_embeddings=emb[:5], gallery_names=["ann", "bob", "cy", "dee", "eve"],
                threshold=0.01)
    assert serving_module(model) is module  # traced once; only the gallery variables changed
    first, second = InProcessClient(v1), InProcessClient(v2)
    np.testing.assert_array_equal(first.embed(images), second.embed(images))
    assert first.identify(images[:5]).best == ["ann", "bob", None, None, None]
    assert second.identify(images[:5]).best == ["ann", "bob", "cy", "dee", "eve"]


def test_empty_gallery_answers_unknown(setup, tmp_path):
    client = InProcessClient(export(setup["model"], tmp_path))
    result = client.identify(setup["images"][:3])
    assert result.unknown.tolist() == [True] * 3 and result.names == [[], [], []]
    assert result.distances.shape == (3, 0) and result.best == [None] * 3
    meta = client.metadata()
    assert meta["gallery_faces"] == 0 and meta["threshold"] is None


def test_gallery_must_match_names(setup, tmp_path):
    with pytest.raises(ValueError, match="gallery"):
        export(setup["model"], tmp_path, gallery_embeddings=setup["emb"][:3], gallery_names=["a", "b"])


def test_models_config_parses(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = write_models_config("/models", tmp_path / "models.config", versions_to_keep=3, labels={"stable": 4})
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == ("facenet", "/models/facenet", "tensorflow")
    assert entry.model_version_policy.latest.num_versions == 3 and dict(entry.version_labels) == {"stable": 4}
    with pytest.raises(ValueError):
        write_models_config("/models", tmp_path / "x.config", versions_to_keep=0)


def test_cli_run_mode(setup, tmp_path, capsys):
    import tf_keras as keras

    from trainer import checkpoints, config as config_lib
    from trainer.models import inference_model

    run = tmp_path / "run"
    cfg = config_lib.from_dict({"model": {"name": "tiny", "input_size": SIZE}})
    (run / "checkpoints").mkdir(parents=True)
    (run / "plan.json").write_text(json.dumps({"config": cfg.to_dict(), "image_size": SIZE}))
    checkpoints.save(checkpoints.checkpoint_dir(run, 0), setup["model"], keras.optimizers.Adam(),
                     {"epoch": 0, "metrics": {"val_best_threshold": 0.9}}, cfg.to_dict())
    base = tmp_path / "exports"
    assert main(["--run", str(run), "--base-path", str(base), "--models-config", str(tmp_path / "models.config"),
                 "--config-base-path", "/models"]) == 0
    assert "exported facenet version 1" in capsys.readouterr().out
    client = InProcessClient(base)
    assert client.metadata()["threshold"] == 0.9 and client.metadata()["source_run"] == str(run)
    # What a run ships is its inference model: mirror-averaged by default (trainer/models/mirror.py).
    shipped = inference_model(setup["model"], cfg.model.mirror_average)(setup["images"]).numpy()
    assert cfg.model.mirror_average and not np.allclose(shipped, setup["emb"], atol=1e-3)
    np.testing.assert_allclose(client.embed(setup["images"]), shipped, atol=1e-5)
    assert 'base_path: "/models/facenet"' in (tmp_path / "models.config").read_text()


def _home(tmp_path, model, threshold=0.5) -> Path:
    """A FACENET_HOME whose production model is version 3 (enroll/home.py's layout)."""
    from enroll import home as layout

    home = tmp_path / "home"
    model.save(str(layout.saved_model_dir(home, 3)), include_optimizer=False)
    layout.meta_file(home, 3).write_text(json.dumps({"version": 3, "threshold": threshold}))
    layout.write_production(home, 3)
    return home


def test_enroll_export_serving_with_and_without_gallery(setup, tmp_path, capsys):
    """A home is exported by enroll (it reads the home, serving is handed the model and gallery)."""
    from enroll import cli
    from enroll.store import SqliteGallery

    home = _home(tmp_path, setup["model"], threshold=setup["threshold"])
    assert cli.main(["export-serving", "--home", str(home)]) == 0
    assert "no gallery database" in capsys.readouterr().err
    assert InProcessClient(home / "serving").metadata()["gallery_faces"] == 0

    with SqliteGallery(home) as gallery:  # one vector per face and model version; ann has two faces
        for name, rows in (("ann", [0, 3]), ("bob", [1]), ("cy", [2])):
            faces = [(f"crop {name} {i}".encode(), f"{name}{i}.jpg") for i in rows]
            gallery.add_person(name, faces, {3: setup["emb"][rows], 2: np.zeros((len(rows), 128))})
    assert cli.main(["export-serving", "--home", str(home), "--json", "--models-config",
                     str(tmp_path / "models.config"), "--config-base-path", "/models"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == 2 and report["gallery_faces"] == 4 and report["gallery_people"] == 3
    client = InProcessClient(home / "serving")
    assert client.version == 2 and client.metadata()["model_version"] == 3
    assert client.identify(setup["images"]).best == ["ann", "bob", "cy", "ann", None, None]
    assert 'base_path: "/models/facenet"' in (tmp_path / "models.config").read_text()
    # Who a version serves, read from its variables by the key beside the variable (remove-person's way).
    from enroll.forget import served_people

    assert served_people(versions.version_dir(home / "serving", "facenet")) == {"ann", "bob", "cy"}


def test_cli_errors_are_one_line(setup, tmp_path, capsys):
    from enroll import cli

    assert main(["--run", str(tmp_path / "missing"), "--base-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["--home", str(tmp_path)]) == 2  # moved to enroll: one line that says where
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "enroll export-serving --home" in err
    assert cli.main(["export-serving", "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no production model" in err and "export failed" not in err
    home = _home(tmp_path, setup["model"])
    for argv, message in ((["--model-version", "7"], "no model version 7"), (["--top-k", "0"], "--top-k"),
                          (["--name", "a/b"], "--name"), (["--threshold", "nan"], "--threshold")):
        assert cli.main(["export-serving", "--home", str(home), *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert not (home / "serving").exists()  # nothing was exported
