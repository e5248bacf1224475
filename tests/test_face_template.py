"""Face framings (``model.face_template``): the geometry of each, caches kept apart, the dlib teacher
agreeing with itself only on crops in its own framing, and the framing travelling with the model
into enrolment (a home never mixes framings)."""
import json
import shutil

import numpy as np
import pytest

from trainer.align import (DLIB_CHIP_LANDMARKS, LANDMARK_KEYS, TEMPLATES, FaceAligner, read_image,
                           similarity_transform, template_landmarks, warp_to_template)
from trainer.config import ConfigError
from trainer.config import load as load_config


def test_each_template_puts_the_landmarks_on_its_own_points():
    for name, points in TEMPLATES.items():
        landmarks = points * 180 + [60, 40]  # a face of exactly this shape, larger and elsewhere
        assert warp_to_template(np.zeros((300, 300, 3), np.uint8), landmarks, 128, name).shape == (128, 128, 3)
        matrix = similarity_transform(landmarks, points * 128)
        np.testing.assert_allclose(landmarks @ matrix[:, :2].T + matrix[:, 2], points * 128, atol=1e-6)
    # dlib's chip shows the forehead: its eyes sit well above ArcFace's, its mouth too
    assert DLIB_CHIP_LANDMARKS[:2, 1].mean() < TEMPLATES["arcface"][:2, 1].mean() - 0.15
    assert DLIB_CHIP_LANDMARKS[3:, 1].mean() < TEMPLATES["arcface"][3:, 1].mean() - 0.1


def test_an_unknown_template_is_refused_at_once():
    with pytest.raises(ValueError, match="unknown face template 'wide'"):
        FaceAligner(96, template="wide")
    with pytest.raises(ValueError, match="unknown face template"):
        template_landmarks("wide")
    with pytest.raises(ConfigError, match="model.face_template' must be one of arcface, dlib"):
        load_config(None, ["model.face_template=wide"])
    assert load_config(None, []).model.face_template == "arcface"


def test_framings_have_their_own_shards_and_old_caches_stay_valid(tmp_path):
    from trainer.prepare import shard_dir

    # the framing is the folder's, not the shard name's: the default's folder is the one caches made
    # before framings existed live in, and another framing never lands in it
    assert shard_dir(tmp_path, 96, True).name == shard_dir(tmp_path, 96, True, "arcface").name == "aligned-96"
    assert shard_dir(tmp_path, 96, True, "dlib") != shard_dir(tmp_path, 96, True)
    assert shard_dir(tmp_path, 96, "prealigned", "dlib").name == "aligned-96-dlib"
    assert shard_dir(tmp_path, 96, False, "dlib").name == "aligned-96-resized"  # a resize has no framing


def test_real_faces_land_on_the_dlib_template(shared_data):
    """MTCNN run again on a dlib-framed crop finds the eyes within 4 px of that template (128 px)."""
    aligner = FaceAligner(128, template="dlib")
    for path in sorted((shared_data / "lfw_mini" / "Tony_Blair").glob("*.jpg"))[:3]:
        crop = aligner.align(read_image(path)).crop
        again = FaceAligner.detector().detect_faces(crop)
        found = np.array([again[0]["keypoints"][k] for k in LANDMARK_KEYS[:2]], float)
        assert np.abs(found - DLIB_CHIP_LANDMARKS[:2] * 128).max() < 4.0


def teacher_cosines(shared_data, template: str) -> np.ndarray:
    """Cosine between the teacher's embedding of its own chip and of our crop in ``template``'s framing."""
    import cv2

    from trainer.teacher import DlibTeacher

    teacher, aligner = DlibTeacher(), FaceAligner(128, template=template)
    cosines = []
    for path in sorted((shared_data / "lfw_mini").glob("*/*_0001.jpg"))[:8]:
        result = aligner.align(read_image(path))
        own = teacher.embed(result.view, result.box)[0]
        ours = teacher.embed_chips([cv2.resize(result.crop, (150, 150))])[0]
        cosines.append(float(own @ ours))
    return np.array(cosines)


def test_the_teacher_sees_its_own_face_only_in_its_framing(shared_data, teacher_installed):
    """The reason for the dlib framing: fed our dlib-framed crop, the teacher answers nearly as on its
    own chip; fed the ArcFace crop of the same face it answers something else (measured on 605
    validation photos: cosine 0.99 against 0.90, pair accuracy 0.96 against 0.78; README)."""
    dlib, arcface = teacher_cosines(shared_data, "dlib"), teacher_cosines(shared_data, "arcface")
    assert dlib.mean() > 0.97 and dlib.mean() > arcface.mean() + 0.04, (dlib.round(3), arcface.round(3))


def framed_copy(trained_run, tmp_path, template: str):
    """A copy of the session's tiny run whose plan says its crops are in ``template``'s framing."""
    from trainer.run_plan import RunPlan

    copy = tmp_path / f"run-{template}"
    shutil.copytree(trained_run, copy)
    plan = RunPlan.load(copy)
    plan.face_template = template
    plan.save(copy)
    return copy


def test_the_framing_travels_into_enrolment(trained_run, shared_data, tmp_path):
    """A dlib-framed model's home records its framing, enrols photos in it, and exports it to
    serving; a home whose people were enrolled in another framing refuses it in one line."""
    from enroll import cli
    from enroll.crops import decode_png
    from enroll.model_versions import production_meta
    from enroll.store import SqliteGallery

    photo = str(shared_data / "lfw_mini" / "Colin_Powell" / "Colin_Powell_0001.jpg")
    run = framed_copy(trained_run, tmp_path, "dlib")
    home = tmp_path / "home-dlib"
    assert cli.main(["init", "--run", str(run), "--home", str(home)]) == 0
    _, meta = production_meta(home)
    assert meta["face_template"] == "dlib"
    assert cli.main(["add-person", "Colin Powell", photo, "--home", str(home)]) == 0
    with SqliteGallery(home) as gallery:
        stored = decode_png(gallery.crop(gallery.faces_without(-1)[0].sha256))
    expected = FaceAligner(meta["image_size"], template="dlib").align(read_image(photo)).crop
    assert np.abs(stored.astype(int) - expected.astype(int)).max() <= 1
    assert cli.main(["export-serving", "--home", str(home)]) == 0
    exported = json.loads(next((home / "serving").glob("*/*/assets.extra/metadata.json")).read_text())
    assert exported["face_template"] == "dlib"  # what a serving client must align to

    arcface_home = tmp_path / "home-arcface"
    assert cli.main(["init", "--run", str(trained_run), "--home", str(arcface_home)]) == 0
    assert cli.main(["add-person", "Colin Powell", photo, "--home", str(arcface_home)]) == 0
    before = (arcface_home / "PRODUCTION").read_text()
    assert cli.main(["init", "--run", str(run), "--home", str(arcface_home)]) != 0
    assert (arcface_home / "PRODUCTION").read_text() == before
