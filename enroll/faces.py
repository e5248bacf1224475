"""Every face in an image, each with its box and its aligned crop.

``trainer.align.FaceAligner.align`` keeps the largest face only (an enrolment photo shows one
person); a video frame may show several people, each tracked on its own. This uses the same
MTCNN detector, the same confidence floor, the same detection view of small images and the same
5-point template alignment, so each crop is exactly what ``add-person`` would make of that face.
A small image is detected on a view padded with its own reflection (``detection_view``): a face
near its edge shows up again, mirrored, in the padding, and is dropped here (the largest-face
rule of enrolment never picks it; a list of every face would).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.align import DEFAULT_TEMPLATE, LANDMARK_KEYS, MIN_CONFIDENCE, FaceAligner, detection_view, warp_to_template

Box = tuple[int, int, int, int]  # x, y, width, height in the image's own pixels


@dataclass(frozen=True)
class Face:
    box: Box
    confidence: float
    crop: np.ndarray  # (size, size, 3) uint8, aligned as enrolment aligns


def detect_faces(images: list[np.ndarray], size: int, min_confidence: float = MIN_CONFIDENCE,
                 template: str = DEFAULT_TEMPLATE) -> list[list[Face]]:
    """The faces of each RGB image, largest first. Images of one size (a video's frames) go through
    MTCNN as one batch, which costs little more than one image on a CPU."""
    if not images:
        return []
    views = [detection_view(image) for image in images]
    found = FaceAligner.detector().detect_faces(views if len(views) > 1 else views[0])
    per_image = found if len(views) > 1 else [found]
    return [_faces(image, view, detections, size, min_confidence, template)
            for image, view, detections in zip(images, views, per_image)]


def _faces(image, view, detections, size: int, min_confidence: float, template: str) -> list[Face]:
    faces = []
    for det in sorted(detections, key=lambda d: d["box"][2] * d["box"][3], reverse=True):
        x, y, w, h = _unpadded(det["box"], image.shape, view.shape)
        inside = 0 <= x + w / 2 < image.shape[1] and 0 <= y + h / 2 < image.shape[0]
        if det["confidence"] < min_confidence or not inside:  # outside: a face's reflection in the padding
            continue
        landmarks = np.array([det["keypoints"][k] for k in LANDMARK_KEYS], dtype=np.float64)
        faces.append(Face(box_in_image(det["box"], image.shape, view.shape), float(det["confidence"]),
                          warp_to_template(view, landmarks, size, template)))
    return faces


def _unpadded(box, image_shape, view_shape) -> tuple[float, float, float, float]:
    """A box found on the detection view, in the image's pixels. ``detection_view`` pads a small
    image by a quarter of each side (integer division) with reflected pixels, and scales it up."""
    h, w = image_shape[:2]
    pad_y, pad_x = (0, 0) if view_shape[:2] == (h, w) else (h // 4, w // 4)
    sy, sx = view_shape[0] / (h + 2 * pad_y), view_shape[1] / (w + 2 * pad_x)
    x, y, bw, bh = (float(v) for v in box)
    return x / sx - pad_x, y / sy - pad_y, bw / sx, bh / sy


def box_in_image(box, image_shape, view_shape) -> tuple[int, int, int, int]:
    """A box found on the detection view (x, y, width, height), in the image's pixels, cut to the image."""
    h, w = image_shape[:2]
    x, y, bw, bh = _unpadded(box, image_shape, view_shape)
    left, top = max(0.0, x), max(0.0, y)
    right, bottom = min(float(w), x + bw), min(float(h), y + bh)
    return round(left), round(top), max(0, round(right - left)), max(0, round(bottom - top))
