"""The API's settings: its limits, CORS and where embeddings come from.

``enroll serve`` builds one ``ApiSettings`` from its flags; uvicorn's worker processes import the
app by name (``app_from_environment``), so the settings travel to them as JSON in
``FACENET_API_SETTINGS`` together with the home.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from enroll.gallery import GalleryError

SETTINGS_ENV = "FACENET_API_SETTINGS"
MIB = 2**20


@dataclass(frozen=True)
class ApiSettings:
    home: str
    embed_server: str | None = None  # TF-Serving gRPC host:port for embeddings; None = the model in this process
    max_body_bytes: int = 64 * MIB  # a whole request (all its photos and fields)
    max_photos: int = 10  # photos in one enrolment
    max_photo_bytes: int = 10 * MIB  # one photo (trainer.align also caps pixels at 40 M)
    cors_origins: tuple[str, ...] = field(default_factory=tuple)  # none: browsers allow same-origin calls only

    def __post_init__(self):
        for name in ("max_body_bytes", "max_photos", "max_photo_bytes"):
            if int(getattr(self, name)) < 1:
                raise GalleryError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_photo_bytes > self.max_body_bytes:
            raise GalleryError(f"--max-photo-bytes ({self.max_photo_bytes}) exceeds --max-body-bytes "
                               f"({self.max_body_bytes}): no request could carry such a photo")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ApiSettings":
        return cls(**json.loads(text))


def settings_from_environment() -> ApiSettings:
    """What ``enroll serve`` put in $FACENET_API_SETTINGS; without it, the defaults for $FACENET_HOME."""
    from enroll.home import resolve_home

    text = os.environ.get(SETTINGS_ENV)
    return ApiSettings.from_json(text) if text else ApiSettings(home=str(resolve_home()))
