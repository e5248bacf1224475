"""A trusted face model whose embeddings a student learns to match (``train.teacher``).

The one teacher here is dlib's ResNet face descriptor (the model behind ``face_recognition``, 0.99
on LFW), from the optional extra ``[teacher]``: ``dlib-bin`` and ``face-recognition-models``, whose
weights ship inside the package, so nothing is downloaded at run time. It runs on the photo
``prepare`` detected the face in, with dlib's own 5-point landmarks found inside the face box
MTCNN gave, on dlib's own 150 px chip. Each photo gets two embeddings, of the chip and of its
mirror image, so that a student shown a flipped crop is taught the flipped target.

Embeddings are L2-normalised (the student's are too), so distances compare on the same scale.
"""
from __future__ import annotations

import threading

import numpy as np

from trainer.config import ConfigError

TEACHERS = ("dlib_resnet_v1",)
EXTRA_HINT = "pip install -e '.[teacher]' (dlib-bin and face-recognition-models)"


class TeacherMissing(ConfigError):
    """The teacher was asked for but its packages are not installed; one line saying which extra."""


def check_teacher(name: str) -> None:
    """Raise ``TeacherMissing`` (or ``ValueError`` for an unknown name) before any work starts."""
    if name not in TEACHERS:
        raise ConfigError(f"unknown teacher {name!r}; expected one of {', '.join(TEACHERS)}")
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError as exc:
        raise TeacherMissing(f"teacher {name!r} needs the [teacher] extra ({exc.name} is missing): "
                             f"{EXTRA_HINT}") from None


class DlibTeacher:
    """dlib's 5-point shape predictor + ResNet descriptor, loaded once per process."""

    name = "dlib_resnet_v1"
    dim = 128
    chip_size, chip_padding = 150, 0.25  # dlib's own chip geometry for this descriptor
    _lock = threading.Lock()
    _models = None

    @classmethod
    def _load(cls):
        with cls._lock:
            if cls._models is None:
                check_teacher(cls.name)
                import dlib
                import face_recognition_models as frm

                cls._models = (dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
                               dlib.face_recognition_model_v1(frm.face_recognition_model_location()))
            return cls._models

    def chip(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """dlib's aligned 150 px chip of the face in ``box`` (x, y, w, h) of the RGB ``image``;
        None when dlib cannot place its landmarks."""
        import dlib

        predictor, _ = self._load()
        x, y, w, h = (int(v) for v in box)
        image = np.ascontiguousarray(image)
        try:
            shape = predictor(image, dlib.rectangle(x, y, x + w, y + h))
            return dlib.get_face_chip(image, shape, self.chip_size, self.chip_padding)
        except RuntimeError:
            return None

    def embed_chips(self, chips: list[np.ndarray]) -> np.ndarray | None:
        """``[len(chips), 128]`` unit vectors of aligned chips; None when any is not finite."""
        _, descriptor = self._load()
        try:
            vectors = np.asarray(descriptor.compute_face_descriptor([np.ascontiguousarray(c) for c in chips]),
                                 np.float32)
        except RuntimeError:
            return None
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(vectors)) or np.any(norms < 1e-6):
            return None
        return vectors / norms

    def embed(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """``[2, 128]`` unit vectors (the face, its mirror image) for the face in ``box`` (x, y, w, h)
        of the RGB ``image``; None when dlib cannot place its landmarks."""
        chip = self.chip(image, box)
        return None if chip is None else self.embed_chips([chip, chip[:, ::-1]])


def build_teacher(name: str) -> DlibTeacher:
    check_teacher(name)
    return DlibTeacher()

