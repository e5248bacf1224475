"""What every serving client shares: the signature calls, results, errors and retry policy.

A client only implements ``_predict(signature, inputs) -> {output: ndarray}``; this module turns
that into ``embed`` / ``embed_jpeg`` / ``identify`` / ``identify_jpeg`` / ``metadata`` with the
same inputs and results whatever the transport (REST, gRPC or in-process), so code written against
the embedded default runs unchanged against a TF-Serving deployment.
"""
from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


class ServingError(RuntimeError):
    """A request failed for good (after retries, or at once when retrying cannot help)."""


class TransientError(Exception):
    """Raised by a transport for failures worth retrying (refused/reset, 503, UNAVAILABLE, timeouts)."""


def with_retries(call: Callable[[], T], what: str, retries: int, backoff: float, max_backoff: float = 5.0) -> T:
    """``call()`` with up to ``retries`` retries on TransientError, exponential backoff with jitter.

    Jitter spreads the retries of many clients that failed together (e.g. while a TF-Serving
    replica restarts) so they do not come back in lockstep.
    """
    for attempt in range(retries + 1):
        try:
            return call()
        except TransientError as exc:
            if attempt == retries:
                raise ServingError(f"{what}: {exc} (gave up after {attempt + 1} attempts)") from None
            time.sleep(min(max_backoff, backoff * 2 ** attempt) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


_TF_NOISE = re.compile(r"Graph execution error:|Detected at node .*?\(most recent call last\):|<stack traces unavailable>"
                       r"|\[\[\{\{node [^}]*\}\}\]\]|\[Op:[^\]]*\]")


def one_line_error(exc: BaseException) -> str:
    """A TensorFlow error's actual message on one line, without graph-location noise."""
    text = _TF_NOISE.sub(" ", getattr(exc, "message", None) or str(exc))
    return " ".join(text.split()) or type(exc).__name__


@dataclass
class Identification:
    """``identify`` results: ``names[i]`` the closest people to face i (nearest first),
    ``distances[i]`` their L2 distances, ``unknown[i]`` no one within the threshold."""

    names: list[list[str]]
    distances: np.ndarray
    unknown: np.ndarray

    @property
    def best(self) -> list[str | None]:
        """The identity of each face: its nearest person, or None when unknown."""
        return [None if unk or not names else names[0] for names, unk in zip(self.names, self.unknown)]


def as_images(images) -> np.ndarray:
    """A batch [N, H, W, 3] from one image or a batch (uint8 kept, anything else float32)."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected RGB images [N, H, W, 3] or one [H, W, 3], got shape {array.shape}")
    return array if array.dtype == np.uint8 else array.astype(np.float32)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SignatureClient:
    """The signature calls on top of a transport's ``_predict``."""

    def _predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def embed(self, images) -> np.ndarray:
        """Embeddings [N, D] of aligned face images (RGB in [0, 255], any size)."""
        batch = as_images(images)
        signature = "embed_uint8" if batch.dtype == np.uint8 else "serving_default"
        return np.asarray(self._predict(signature, {"images": batch})["embeddings"], np.float32)

    def embed_jpeg(self, blobs: Sequence[bytes]) -> np.ndarray:
        """Embeddings [N, D] of encoded (JPEG, PNG, ...) aligned faces."""
        return np.asarray(self._predict("embed_jpeg", {"image_bytes": _blobs(blobs)})["embeddings"], np.float32)

    def identify(self, images) -> Identification:
        return self._identification(self._predict("identify", {"images": as_images(images).astype(np.float32)}))

    def identify_jpeg(self, blobs: Sequence[bytes]) -> Identification:
        return self._identification(self._predict("identify_jpeg", {"image_bytes": _blobs(blobs)}))

    def metadata(self) -> dict:
        """The export's metadata (threshold, model, image size, gallery size, version, ...)."""
        values = self._predict("metadata", {"keys": np.array([b"all"], dtype=object)})["values"]
        return json.loads(_text(np.asarray(values, dtype=object).reshape(-1)[0]))

    @staticmethod
    def _identification(out: dict) -> Identification:
        names = [[_text(n) for n in row] for row in np.asarray(out["names"], dtype=object)]
        distances = np.asarray(out["distances"], np.float32)
        if distances.size == 0:  # an empty gallery: JSON loses the [N, 0] shape
            distances = distances.reshape(len(names), 0)
        return Identification(names, distances, np.asarray(out["unknown"], bool).reshape(-1))


def _blobs(blobs: Sequence[bytes]) -> np.ndarray:
    if isinstance(blobs, (bytes, bytearray)):
        blobs = [blobs]
    if not all(isinstance(b, (bytes, bytearray)) for b in blobs):
        raise ValueError("expected a list of encoded image bytes")
    return np.array([bytes(b) for b in blobs], dtype=object)
