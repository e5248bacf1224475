"""Edge export (serving/tflite.py, serving/tflite_embedder.py, ``serving.export --tflite``): a run's
inference model as TFLite float32 / float16 / int8, run by the LiteRT interpreter, against Keras."""
import json

import numpy as np
import pytest

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from serving.export import main
from serving.tflite import convert, representative_crops, write_tflite
from serving.tflite_embedder import TFLiteEmbedder, embed_dataset
from tests.synthetic import identity_pattern, photo, write_shard
from trainer.run_plan import RunPlan

SIZE = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny network in a fake run dir (as test_serving_export's), with 6 identities' shards of
    face-like synthetic photos as its training split, and held-out photos of the same kind."""
    import tf_keras as keras

    from trainer import checkpoints, config as config_lib
    from trainer.models import build_model, inference_model

    keras.utils.set_random_seed(0)
    network = build_model("tiny", input_size=SIZE)
    cfg = config_lib.from_dict({"model": {"name": "tiny", "input_size": SIZE}})
    run = tmp_path_factory.mktemp("edge") / "run"
    (run / "checkpoints").mkdir(parents=True)
    rng = np.random.default_rng(0)
    people = {f"p{i}": np.stack([photo(identity_pattern(i, SIZE), rng) for _ in range(5)]) for i in range(8)}
    shards = [write_shard(run / f"{name}.tfrecord", name, images) for name, images in people.items()]
    (run / "plan.json").write_text(json.dumps({"config": cfg.to_dict(), "image_size": SIZE,
                                               "shards": {"train": shards[:6], "test": shards[6:]}}))
    checkpoints.save(checkpoints.checkpoint_dir(run, 0), network, keras.optimizers.Adam(),
                     {"epoch": 0, "metrics": {}}, cfg.to_dict())
    model = inference_model(network, cfg.model.mirror_average)  # what the run ships: mirror-averaged
    held_out = np.concatenate([people["p6"], people["p7"]]).astype(np.float32)
    crops = representative_crops(run, SIZE)
    flat = {q: convert(model, q, crops if q == "int8" else None) for q in ("none", "float16", "int8")}
    return {"run": run, "model": model, "images": held_out, "keras": model(held_out).numpy(), "crops": crops,
            "flat": flat}


def test_representative_crops_from_a_run_and_from_folders(setup, tmp_path):
    crops = setup["crops"]  # two from each of the run's 6 training shards
    assert crops.shape == (12, SIZE, SIZE, 3) and crops.dtype == np.float32 and 0 <= crops.min() < crops.max() <= 255
    assert representative_crops(setup["run"], SIZE, limit=4).shape == (4, SIZE, SIZE, 3)
    folder = tmp_path / "crops"  # aligned crops as image files, any size: resized
    folder.mkdir()
    for i, image in enumerate(setup["images"][:3].astype(np.uint8)):
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(np.repeat(np.repeat(image, 2, 0), 2, 1)).numpy())
    (folder / "notes.jpg").write_text("not an image")
    assert representative_crops(folder, SIZE).shape == (3, SIZE, SIZE, 3)


def test_float32_matches_keras(setup):
    embedder = TFLiteEmbedder(setup["flat"]["none"])
    assert (embedder.image_size, embedder.embedding_dim) == (SIZE, 128)
    assert embedder.interpreter.get_signature_list() == {"serving_default": {"inputs": ["images"],
                                                                            "outputs": ["embeddings"]}}
    for batch_size in (1, 3, 32):  # the batch dimension is resized as needed
        np.testing.assert_allclose(embedder.embed(setup["images"], batch_size), setup["keras"], atol=1e-5)


def test_float16_and_int8_are_smaller_and_close(setup):
    sizes = {q: len(b) for q, b in setup["flat"].items()}
    assert sizes["float16"] < 0.6 * sizes["none"] and sizes["int8"] < 0.4 * sizes["none"], sizes
    half = TFLiteEmbedder(setup["flat"]["float16"]).embed(setup["images"])
    assert np.abs(half - setup["keras"]).max() < 1e-3  # measured 1e-4
    quantised = TFLiteEmbedder(setup["flat"]["int8"]).embed(setup["images"])
    np.testing.assert_allclose(np.linalg.norm(quantised, axis=1), 1.0, atol=1e-5)
    cosine = (quantised * setup["keras"]).sum(axis=1)
    assert cosine.mean() > 0.99 and cosine.min() > 0.98, cosine  # measured 0.999 and 0.998
    details = TFLiteEmbedder(setup["flat"]["int8"]).interpreter.get_tensor_details()
    assert any(d["dtype"] == np.int8 for d in details)  # activations and weights in int8


def test_embed_dataset_scores_like_keras(setup):
    from trainer import pipeline
    from trainer.evaluate import embed

    dataset = pipeline.ordered_images(RunPlan.load(setup["run"]).shards.test, SIZE, batch_size=4)
    vectors, identities, sources = embed_dataset(TFLiteEmbedder(setup["flat"]["none"]), dataset)
    reference, ref_identities, ref_sources = embed(setup["model"], dataset)
    assert identities == ref_identities and sources == ref_sources and len(identities) == 10
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


def test_cli_writes_each_quantisation(setup, tmp_path, capsys):
    run = str(setup["run"])
    out = tmp_path / "models" / "facenet.tflite"  # its folder is made
    assert main(["--run", run, "--tflite", str(out)]) == 0
    assert f"wrote {out} (TFLite, none" in capsys.readouterr().out
    np.testing.assert_allclose(TFLiteEmbedder(out).embed(setup["images"]), setup["keras"], atol=1e-5)
    assert main(["--run", run, "--tflite", str(tmp_path / "q.tflite"), "--quantize", "int8",
                 "--representative", run]) == 0
    assert "calibrated on 12 crops" in capsys.readouterr().out
    cosine = (TFLiteEmbedder(tmp_path / "q.tflite").embed(setup["images"]) * setup["keras"]).sum(axis=1)
    assert cosine.mean() > 0.99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "q.tflite"]  # no partial files


def _one_line_error(capsys, run_main) -> str:
    try:
        code = run_main()
    except SystemExit as exc:  # argparse-level refusals (trainer.cliargs: one line, exit 2)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (code, err)
    return err


@pytest.mark.parametrize("argv, message", [
    (["--quantize", "int8"], "needs representative data"),
    (["--quantize", "int8", "--representative", "{empty}"], "no representative crops"),
    (["--quantize", "int8", "--representative", "{missing}"], "not a directory"),
    (["--quantize", "float16", "--representative", "{run}"], "only used with --quantize int8"),
    (["--quantize", "int4"], "invalid choice"),
    (["--tflite", "{dir}"], "is a directory"),
])
def test_cli_errors_are_one_line_and_write_nothing(setup, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "dir").mkdir()
    out = tmp_path / "out" / "facenet.tflite"
    names = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "run": setup["run"], "dir": tmp_path / "dir"}
    argv = [a.format(**names) for a in argv]
    argv = (["--tflite", str(out)] if "--tflite" not in argv else []) + argv
    err = _one_line_error(capsys, lambda: main(["--run", str(setup["run"]), *argv]))
    assert message in err, err
    assert not (tmp_path / "out").exists() and not any((tmp_path / "dir").iterdir())


def test_other_bad_inputs(setup, tmp_path, capsys):
    _one_line_error(capsys, lambda: main(["--run", str(tmp_path / "nope"), "--tflite", str(tmp_path / "a.tflite")]))
    _one_line_error(capsys, lambda: main(["--run", str(setup["run"]), "--quantize", "float16"]))  # no --tflite
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="needs representative data"):
        write_tflite(setup["model"], tmp_path / "x.tflite", "int8")
    with pytest.raises(ValueError, match="representative crops are"):
        convert(setup["model"], "int8", np.zeros((2, 8, 8, 3), np.float32))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(ValueError, match="not a TFLite model"):
        TFLiteEmbedder(tmp_path / "bad.tflite")
    with pytest.raises(FileNotFoundError):
        TFLiteEmbedder(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match=rf"expected images \[N, {SIZE}, {SIZE}, 3\]"):
        TFLiteEmbedder(setup["flat"]["none"]).embed(np.zeros((2, 16, 16, 3)))


def test_onnx_export_matches_keras(setup, tmp_path, capsys):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from serving.onnx_export import OnnxEmbedder

    out = tmp_path / "facenet.onnx"
    assert main(["--run", str(setup["run"]), "--onnx", str(out)]) == 0
    assert f"wrote {out} (ONNX, float32" in capsys.readouterr().out
    embedder = OnnxEmbedder(out)
    assert [i.name for i in embedder.session.get_inputs()] == ["images"] and embedder.image_size == SIZE
    assert [o.name for o in embedder.session.get_outputs()] == ["embeddings"]
    np.testing.assert_allclose(embedder.embed(setup["images"], batch_size=3), setup["keras"], atol=1e-5)
    # A refused TFLite export in the same command writes neither file.
    _one_line_error(capsys, lambda: main(["--run", str(setup["run"]), "--onnx", str(tmp_path / "b.onnx"),
                                          "--tflite", str(tmp_path / "b.tflite"), "--quantize", "int8",
                                          "--representative", str(tmp_path / "nothing")]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["facenet.onnx"]
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not an ONNX model"):
        OnnxEmbedder(tmp_path / "bad.onnx")
