"""Every face in an image, each with its box and its aligned crop.

``trainer.align.FaceAligner.align`` keeps the largest face only (an enrolment photo shows one
person); a video frame may show several people, each tracked on its own. This uses the same
MTCNN detector, the same confidence floor, the same detection view of small images and the same
5-point template alignment, so each crop is exactly what ``add-person`` would make of that face.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.align import LANDMARK_KEYS, MIN_CONFIDENCE, FaceAligner, detection_view, warp_to_template

Box = tuple[float, float, float, float]  # x, y, width, height in the image's own pixels


@dataclass(frozen=True)
class Face:
    box: Box
    confidence: float
    crop: np.ndarray  # (size, size, 3) uint8, aligned as enrolment aligns


def detect_faces(images: list[np.ndarray], size: int, min_confidence: float = MIN_CONFIDENCE) -> list[list[Face]]:
    """The faces of each RGB image, largest first. Images of one size (a video's frames) go through
    MTCNN as one batch, which costs little more than one image on a CPU."""
    if not images:
        return []
    views = [detection_view(image) for image in images]
    found = FaceAligner.detector().detect_faces(views if len(views) > 1 else views[0])
    per_image = found if len(views) > 1 else [found]
    return [_faces(image, view, detections, size, min_confidence)
            for image, view, detections in zip(images, views, per_image)]


def _faces(image, view, detections, size: int, min_confidence: float) -> list[Face]:
    faces = []
    for det in sorted(detections, key=lambda d: d["box"][2] * d["box"][3], reverse=True):
        if det["confidence"] < min_confidence:
            continue
        landmarks = np.array([det["keypoints"][k] for k in LANDMARK_KEYS], dtype=np.float64)
        faces.append(Face(_image_box(det["box"], image.shape, view.shape), float(det["confidence"]),
                          warp_to_template(view, landmarks, size)))
    return faces


def _image_box(box, image_shape, view_shape) -> Box:
    """A box found on the detection view, in the image's pixels. ``detection_view`` pads a small
    image by a quarter of each side (integer division) and scales the padded image up uniformly."""
    x, y, w, h = (float(v) for v in box)
    if view_shape[:2] == image_shape[:2]:
        return x, y, w, h
    pad_y, pad_x = image_shape[0] // 4, image_shape[1] // 4
    scale = view_shape[0] / (image_shape[0] + 2 * pad_y)
    return x / scale - pad_x, y / scale - pad_y, w / scale, h / scale
