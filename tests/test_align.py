"""Alignment geometry, strict image decoding, and MTCNN alignment of real photos."""
import io

import numpy as np
import pytest
from PIL import Image

from trainer.align import (CANONICAL_LANDMARKS, LANDMARK_KEYS, FaceAligner, ImageError, read_image,
                           similarity_transform, warp_to_template)


def test_similarity_transform_recovers_a_known_transform():
    """Points rotated by 30°, scaled by 1.7 and shifted by (5, -3) map back exactly."""
    src = CANONICAL_LANDMARKS * 100
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = 1.7 * src @ rotation.T + np.array([5.0, -3.0])
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], 1.7 * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], [5.0, -3.0], atol=1e-9)


def test_warp_puts_landmarks_on_the_template():
    """A bright dot at each landmark of a big image lands on the template after warping."""
    image = np.zeros((300, 300, 3), np.uint8)
    landmarks = CANONICAL_LANDMARKS * 180 + [60, 40]
    warped = warp_to_template(image, landmarks, 96)
    assert warped.shape == (96, 96, 3)
    matrix = similarity_transform(landmarks, CANONICAL_LANDMARKS * 96)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, CANONICAL_LANDMARKS * 96, atol=1e-6)


def encode(array, fmt="JPEG"):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"hello, I am a text file\n", "not an image"),
    (encode(np.full((64, 64, 3), 128, np.uint8))[:200], "corrupt image"),
    (encode(np.full((10, 10, 3), 128, np.uint8), "PNG"), "too small"),
])
def test_bad_images_raise_one_line_errors(data, reason):
    with pytest.raises(ImageError, match=reason) as err:
        read_image(data)
    assert "\n" not in str(err.value)


def test_huge_images_are_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (8000, 6000)).save(path)  # 48 MP, above the 40 MP limit
    with pytest.raises(ImageError, match="too large"):
        read_image(path)


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)


def test_grey_and_exif_rotated_images_come_out_rgb(tmp_path):
    grey = np.tile(np.arange(40, dtype=np.uint8), (30, 1))
    assert read_image(encode(grey, "PNG")).shape == (30, 40, 3)
    rotated = Image.fromarray(np.zeros((30, 40, 3), np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rotated.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (40, 30, 3)


def test_real_faces_are_aligned_onto_the_template(shared_data):
    """MTCNN run again on an aligned crop finds the eyes within 3 px of the template (at 112 px)."""
    aligner = FaceAligner(112)
    photos = sorted((shared_data / "lfw_mini" / "Tony_Blair").glob("*.jpg"))[:3]
    for path in photos:
        result = aligner.align(read_image(path))
        assert result.status in ("ok", "several_faces") and result.crop.shape == (112, 112, 3)
        again = FaceAligner.detector().detect_faces(result.crop)
        assert again, f"no face found again in the aligned crop of {path.name}"
        found = np.array([again[0]["keypoints"][k] for k in LANDMARK_KEYS[:2]], float)
        assert np.abs(found - CANONICAL_LANDMARKS[:2] * 112).max() < 3.0


def test_an_image_without_a_face_is_reported(shared_data):
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    result = FaceAligner(96).align(noise)
    assert (result.status, result.crop, result.faces) == ("no_face", None, 0)
