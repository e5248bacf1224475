"""Video files: which paths are videos, and their frames, decoded by OpenCV (FFmpeg) and sampled.

``enroll identify`` treats a path with a video suffix as a video and anything else as a photo.
Decoding is checked the way ``trainer.align.read_image`` checks photos: a missing file, a
directory, a file FFmpeg cannot open (a text file named ``x.mp4``), or one of which no frame
decodes raises ``VideoError`` with a one-line reason. A file that stops decoding part way (a
truncated download) keeps the frames read so far, and says so in ``Video.note``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from enroll.gallery import GalleryError
from enroll.service import PhotoRefused
from trainer.align import MAX_PIXELS, MIN_SIDE

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".3gp", ".ts", ".mts"})
# Faces move little in a fifth of a second: 5 samples a second keep tracks continuous at a fifth of
# the detection cost of a 25 fps video.
DEFAULT_SAMPLE_FPS = 5.0
FALLBACK_FPS = 25.0  # a stream that declares no frame rate (timestamps are then estimates)


class VideoError(PhotoRefused):
    """The file is not a usable video; one line."""


def is_video(path) -> bool:
    return Path(str(path)).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Sampling:
    """Which frames to look at: every ``every_n_frames``-th, or about ``fps`` a second."""
    every_n_frames: int | None = None
    fps: float | None = None

    def __post_init__(self):
        if self.every_n_frames is not None and self.fps is not None:
            raise GalleryError("give --every-n-frames or --fps, not both")
        if self.every_n_frames is not None and self.every_n_frames < 1:
            raise GalleryError(f"--every-n-frames must be at least 1, got {self.every_n_frames}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise GalleryError(f"--fps must be a positive number, got {self.fps}")

    def step(self, video_fps: float) -> int:
        if self.every_n_frames is not None:
            return self.every_n_frames
        return max(1, round(video_fps / (self.fps or DEFAULT_SAMPLE_FPS)))


@dataclass(frozen=True)
class Frame:
    index: int  # in the video, from 0
    time_s: float
    rgb: np.ndarray


@dataclass
class Video:
    """An open video; ``frames`` yields the sampled ones, after which ``frames_read`` and ``note``
    say how far decoding got."""
    source: str
    fps: float
    frames_declared: int  # what the container says; 0 when it does not say
    width: int
    height: int
    capture: object
    frames_read: int = 0
    note: str = ""

    def frames(self, step: int) -> Iterator[Frame]:
        import cv2

        index = 0
        while True:
            # grab() demuxes and decodes; retrieve() converts to BGR only for the frames we keep.
            if not self.capture.grab():
                break
            if index % step == 0:
                ok, bgr = self.capture.retrieve()
                if not ok or bgr is None:
                    break
                yield Frame(index, index / self.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
        self.frames_read = index
        if index == 0:
            raise VideoError(f"{self.source}: no frame could be decoded (corrupt or truncated video)")
        if self.frames_declared and index + 1 < self.frames_declared:  # (some containers round the count)
            self.note = (f"decoding stopped at frame {index} of the {self.frames_declared} the file declares "
                         "(truncated or corrupt?); the frames before were used")

    def close(self) -> None:
        self.capture.release()

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(path) -> Video:
    """Open ``path`` with OpenCV's FFmpeg backend, or raise ``VideoError`` saying why not."""
    import cv2

    source = str(path)
    if not os.path.exists(source):
        raise VideoError(f"{source}: file not found")
    if os.path.isdir(source):
        raise VideoError(f"{source}: is a directory, not a video")
    if not os.access(source, os.R_OK):
        raise VideoError(f"{source}: permission denied")
    if os.path.getsize(source) == 0:
        raise VideoError(f"{source}: empty file")
    # An absolute path, so that FFmpeg never reads a name like "a:b.mp4" as protocol "a"; FFmpeg's
    # backend only, so that OpenCV's image-sequence backend never reads "img%d.mp4" as a pattern.
    capture = cv2.VideoCapture(os.path.abspath(source), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{source}: cannot be decoded as a video (not a video, or a truncated or corrupt one)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    declared = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    video = Video(source, fps if math.isfinite(fps) and fps > 0 else FALLBACK_FPS,
                  int(declared) if math.isfinite(declared) and declared > 0 else 0, width, height, capture)
    if not (math.isfinite(fps) and fps > 0):
        video.note = f"the video declares no frame rate: times assume {FALLBACK_FPS:g} fps"
    if width * height > MAX_PIXELS or min(width, height) < MIN_SIDE:
        video.close()
        raise VideoError(f"{source}: unusable frame size {width}x{height} (minimum side {MIN_SIDE}, "
                         f"at most {MAX_PIXELS:,} pixels)")
    return video
