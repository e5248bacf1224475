"""Face detection (MTCNN) and 5-point similarity alignment to a canonical template.

Every face the system sees — training crops, enrolment photos, identify queries — goes through
``FaceAligner.align`` so that the model always sees the same geometry: the five MTCNN landmarks
(eyes, nose, mouth corners) are mapped onto a template's points (``TEMPLATES``: ArcFace's by default,
or dlib's chip framing) by the least-squares
similarity transform (rotation + uniform scale + translation, Umeyama 1991), then the image is
warped to ``size`` × ``size``.

Image decoding is strict on purpose (``read_image``): a corrupt, truncated, non-image, tiny or
decompression-bomb file raises ``ImageError`` with a one-line reason instead of producing garbage.
"""
from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ArcFace/InsightFace's template for a 112×112 crop (x, y), in MTCNN's landmark order:
# image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner.
# It is scaled to the requested size, so every model sees the same face framing.
CANONICAL_LANDMARKS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
) / 112.0
# dlib's ResNet descriptor's own framing (``dlib.get_face_chip``, 150 px, padding 0.25): where MTCNN
# finds the same five points on dlib's chips (median over the 194 validation photos of celeba299 with
# a chip; logs of session 25, ``experiments/face_template.py`` measures it again). It shows the
# forehead and hair that the ArcFace framing cuts off: the dlib teacher scores 0.96 on validation
# pairs on crops in this framing and 0.78 on ArcFace-framed crops (same photos, same landmarks).
DLIB_CHIP_LANDMARKS = np.array(
    [[0.3133, 0.2933], [0.6733, 0.2933], [0.4867, 0.5200], [0.3333, 0.6800], [0.6400, 0.6800]], dtype=np.float64)
# Face framings a model can be trained on (``model.face_template``); a model is always fed crops in
# the framing it was trained on, so the name travels with it (checkpoint config, export meta).
TEMPLATES = {"arcface": CANONICAL_LANDMARKS, "dlib": DLIB_CHIP_LANDMARKS}
DEFAULT_TEMPLATE = "arcface"
LANDMARK_KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp")
MAX_PIXELS = 40_000_000  # ~ a 7700×5200 photo; above this decoding alone costs seconds and GBs.
MAX_FILE_BYTES = 256 * 2**20  # more than any photo of MAX_PIXELS; reading stops there (a video, /dev/zero)
MIN_SIDE = 24  # MTCNN's smallest detectable face is ~20 px.
MIN_CONFIDENCE = 0.90
# A second face counts as "another person in the photo" only when it is at least this fraction of
# the largest face's area: tiny background faces in crowds should not reject a portrait.
SECOND_FACE_AREA_RATIO = 0.25
# MTCNN misses faces that fill a small, already-cropped image (e.g. CelebA's 89×109 aligned crops):
# such images are detected on a reflect-padded, upscaled view (``detection_view``).
SMALL_SIDE = 160


class ImageError(ValueError):
    """The file is not a usable image; the message is one line, without the path."""


def read_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Decode a file path or encoded bytes into an RGB uint8 array (H, W, 3), EXIF-rotated."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        if isinstance(source, bytes):
            data = source
        else:
            with Path(source).open("rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise ImageError("is a directory, not an image") from None
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as exc:
        raise ImageError(f"unreadable: {exc.strerror or exc}") from None
    if not data:
        raise ImageError("empty file")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"file too large for a photo (more than {MAX_FILE_BYTES:,} bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"image too large: {img.width}x{img.height} pixels (limit {MAX_PIXELS:,})")
            img.load()  # forces a full decode: truncated/corrupt data fails here, not later
            img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I;16") or (img.mode == "I" and img.getextrema()[1] > 255):
                # 16-bit gray (PNG, TIFF): convert("RGB") would clip it to white; keep the high byte
                img = Image.fromarray((np.clip(np.asarray(img, np.int64), 0, 65535) >> 8).astype(np.uint8), "L")
            img = img.convert("RGB")
            array = np.asarray(img, dtype=np.uint8)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image too large (more than {MAX_PIXELS:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if min(array.shape[:2]) < MIN_SIDE:
        raise ImageError(f"image too small: {array.shape[1]}x{array.shape[0]} pixels (minimum side {MIN_SIDE})")
    return array


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 matrix of the similarity transform minimising ||T(src) - dst||² (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection is not a similarity
        d[1, 1] = -1
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / src_c.var(0).sum()
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def template_landmarks(template: str) -> np.ndarray:
    """The 5×2 landmark positions (fractions of the crop side) of a named face framing."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown face template {template!r}; expected one of {', '.join(TEMPLATES)}")
    return TEMPLATES[template]


def warp_to_template(image: np.ndarray, landmarks: np.ndarray, size: int,
                     template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    """Warp ``image`` so that ``landmarks`` (5×2, x/y) land on ``template``'s points at ``size``."""
    return warp_to_points(image, landmarks, template_landmarks(template), size)


def warp_to_points(image: np.ndarray, landmarks: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """``warp_to_template`` onto any 5×2 ``points`` (fractions of the side), e.g. a framing being measured."""
    import cv2

    matrix = similarity_transform(landmarks, points * size)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize: for datasets that are already tightly cropped faces."""
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)


def detection_view(image: np.ndarray) -> np.ndarray:
    """The image MTCNN (and the teacher) look at: the photo itself, or, for a small photo that is
    mostly face, the photo padded by a reflected border of 25 % per side and upscaled so that its
    shorter side is at least ``SMALL_SIDE`` px."""
    import cv2

    h, w = image.shape[:2]
    if min(h, w) >= SMALL_SIDE:
        return image
    pad_y, pad_x = h // 4, w // 4
    padded = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REFLECT)
    scale = SMALL_SIDE / min(h, w)
    return cv2.resize(padded, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)


@dataclass
class AlignResult:
    status: str  # "ok" | "no_face" | "several_faces" (the largest face is still aligned)
    crop: np.ndarray | None  # (size, size, 3) uint8, None when no face
    faces: int  # faces found above MIN_CONFIDENCE
    box: tuple[int, int, int, int] | None = None  # x, y, w, h of the face kept, in ``view``'s pixels
    confidence: float = 0.0
    view: np.ndarray | None = None  # the image detection ran on (see ``detection_view``)


class FaceAligner:
    """MTCNN detector + template alignment. The detector loads lazily, once per process."""

    _lock = threading.Lock()
    _detector = None

    def __init__(self, size: int, min_confidence: float = MIN_CONFIDENCE, template: str = DEFAULT_TEMPLATE):
        self.size = size
        self.min_confidence = min_confidence
        self.template = template
        template_landmarks(template)  # an unknown name fails here, not on the first photo

    @classmethod
    def detector(cls):
        with cls._lock:
            if cls._detector is None:
                import trainer  # noqa: F401  (tf-keras before TensorFlow)
                from mtcnn import MTCNN

                cls._detector = MTCNN(device="CPU:0")
            return cls._detector

    def align(self, image: np.ndarray) -> AlignResult:
        image = detection_view(image)
        faces = [f for f in self.detector().detect_faces(image) if f["confidence"] >= self.min_confidence]
        if not faces:
            return AlignResult("no_face", None, 0, view=image)
        faces.sort(key=lambda f: f["box"][2] * f["box"][3], reverse=True)
        largest = faces[0]
        area = largest["box"][2] * largest["box"][3]
        rivals = [f for f in faces[1:] if f["box"][2] * f["box"][3] >= SECOND_FACE_AREA_RATIO * area]
        landmarks = np.array([largest["keypoints"][k] for k in LANDMARK_KEYS], dtype=np.float64)
        crop = warp_to_template(image, landmarks, self.size, self.template)
        return AlignResult(
            "several_faces" if rivals else "ok",
            crop,
            1 + len(rivals),
            tuple(int(v) for v in largest["box"]),
            float(largest["confidence"]),
            image,
        )
