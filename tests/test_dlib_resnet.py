"""dlib_resnet: dlib's face descriptor as a Keras network, its weights read from the shipped file.

The port is checked against dlib itself on real faces (lfw_mini photos, dlib's own detector,
landmarks and 150 px chips), not against numbers written down here.
"""
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras
from PIL import Image

from trainer import config as config_lib
from trainer.config import ConfigError


@pytest.fixture(scope="module")
def port(teacher_installed):
    from trainer.models import build_model

    return build_model("dlib_resnet")


@pytest.fixture(scope="module")
def chips(shared_data, teacher_installed):
    """dlib's aligned chips of one photo each of six lfw_mini people, and their mirror images."""
    import dlib

    from trainer.teacher import DlibTeacher

    detector, teacher, found = dlib.get_frontal_face_detector(), DlibTeacher(), []
    for person in sorted((shared_data / "lfw_mini").iterdir())[:6]:
        image = np.asarray(Image.open(sorted(person.iterdir())[0]).convert("RGB"))
        box = detector(image, 1)[0]
        found.append(teacher.chip(image, (box.left(), box.top(), box.width(), box.height())))
    found += [chip[:, ::-1] for chip in found]
    return np.stack(found)


def test_port_computes_dlibs_descriptors(port, chips):
    from trainer.teacher import DlibTeacher

    expected = DlibTeacher().embed_chips(list(chips))
    got = port.predict(chips.astype(np.float32), verbose=0)
    assert got.shape == expected.shape == (12, 128)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # and the people stay apart as dlib keeps them: the same distances to within 1e-5
    np.testing.assert_allclose(got @ got.T, expected @ expected.T, atol=1e-5)


def test_every_parameterised_layer_is_read(teacher_installed):
    from trainer.models.dlib_weights import DlibAffine, DlibConv, DlibDense, descriptor_path, read_dlib_layers

    layers = read_dlib_layers(descriptor_path())
    kinds = [type(layer) for layer in layers]
    assert kinds.count(DlibConv) == kinds.count(DlibAffine) == 29 and kinds[-1] is DlibDense
    assert layers[0].kernel.shape == (7, 7, 3, 32) and layers[0].stride == 2 and layers[0].padding == 0
    assert layers[-1].kernel.shape == (256, 128)


def test_a_truncated_file_is_a_one_line_error(tmp_path, teacher_installed):
    from trainer.models.dlib_weights import descriptor_path, read_dlib_layers

    data = open(descriptor_path(), "rb").read()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cut.dat: truncated"):
        read_dlib_layers(str(cut))
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"not a dlib network")
    with pytest.raises(ValueError, match="empty.dat: no dlib network layers"):
        read_dlib_layers(str(empty))


def test_saved_and_loaded_like_any_model(port, chips, tmp_path):
    port.save(str(tmp_path / "m"))
    loaded = keras.models.load_model(str(tmp_path / "m"), compile=False)
    np.testing.assert_allclose(loaded.predict(chips[:4].astype(np.float32), verbose=0),
                               port.predict(chips[:4].astype(np.float32), verbose=0), atol=1e-6)


def test_other_sizes_run_fully_convolutionally(teacher_installed):
    from trainer.models import build_model

    model = build_model("dlib_resnet", input_size=128)
    out = model.predict(np.full((2, 128, 128, 3), 128.0, np.float32), verbose=0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_needs_dlib_framing_and_128_dimensions(teacher_installed):
    from trainer.models import build_model

    with pytest.raises(ConfigError, match="model.face_template=dlib"):
        config_lib.from_dict({"model": {"name": "dlib_resnet"}})
    with pytest.raises(ValueError, match="128-d"):
        build_model("dlib_resnet", embedding_dim=64)


def test_the_config_file_names_a_valid_run():
    cfg = config_lib.load("experiments/dlib_resnet.yaml")
    assert (cfg.model.name, cfg.model.input_size, cfg.model.face_template) == ("dlib_resnet", 150, "dlib")


YALE_PHOTOS = ("yaleB12_P00A+070E+00.jpg", "yaleB12_P00A+085E+20.jpg",  # side-lit: MTCNN finds no face
               "yaleB12_P00A-010E+00.jpg", "yaleB12_P00A-025E+00.jpg")  # lit from the front: it does


def test_a_face_mtcnn_misses_is_embedded_as_dlib_embeds_it(port, shared_data, tmp_path, local_ray):
    """In dlib's framing a photo MTCNN finds no face in (Yale B's side lighting) gets dlib's own
    chip from dlib's landmarks, not a centre crop, so the port embeds it as the teacher does."""
    import shutil

    from trainer.pipeline import ordered_images
    from trainer.prepare import prepare
    from trainer.teacher_cache import read_teacher, teacher_path

    person = tmp_path / "photos" / "yaleB12"
    person.mkdir(parents=True)
    for name in YALE_PHOTOS:
        shutil.copy(shared_data / "yaleb27" / "yaleB12" / name, person / name)
    manifest = prepare(str(person.parent), tmp_path / "cache", 150, "detect_or_resize", progress=False,
                       teacher="dlib_resnet_v1", template="dlib")
    counts = manifest["counts"]
    assert (counts["faces_aligned"], counts["resized_no_face"], counts["fallback_dlib_landmarks"]) == (4, 2, 2), counts
    shard = Path(manifest["dir"]) / manifest["identities"]["yaleB12"]["shard"]
    crops = np.concatenate([b["image"].numpy() for b in ordered_images([str(shard)], 150)])
    taught, ok = read_teacher(teacher_path(shard, "dlib_resnet_v1"))
    assert ok.all()
    cosines = np.sum(port.predict(crops, verbose=0) * taught[:, 0], axis=1)
    assert cosines[:2].min() > 0.97, cosines  # the fallback photos: the teacher's chip (JPEG-stored)
    assert cosines.min() > 0.9, cosines       # MTCNN's landmarks on dlib's template: close to dlib's own

    arcface = prepare(str(person.parent), tmp_path / "cache", 150, "detect_or_resize", progress=False)
    assert (arcface["counts"]["resized_no_face"], arcface["counts"]["fallback_dlib_landmarks"]) == (2, 0)


def test_edge_exports_compute_dlibs_descriptors(port, chips):
    """TFLite and ONNX files of the port embed dlib's chips as dlib does (its mean subtraction is a
    plain Rescaling: a Normalization layer's constants became inputs in tf2onnx)."""
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from serving import onnx_export, tflite
    from serving.tflite_embedder import TFLiteEmbedder
    from trainer.teacher import DlibTeacher

    expected = DlibTeacher().embed_chips(list(chips))
    for embedder in (TFLiteEmbedder(tflite.convert(port)), onnx_export.OnnxEmbedder(onnx_export.convert(port))):
        np.testing.assert_allclose(embedder.embed(chips.astype(np.float32)), expected, atol=1e-5)
