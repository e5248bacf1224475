"""Enrolment policy: ``$FACENET_HOME/enroll.yaml`` (optional; unknown keys are rejected by name).

    retrain_after_changes: 5      # submit a warm-start retraining after this many class changes (0 = only on demand)
    retrain_epochs: 3             # budget of one warm-start retraining (epochs of retrain_steps_per_epoch steps)
    retrain_steps_per_epoch: 20
    promotion_max_drop: 0.01      # ε: the largest verification-accuracy drop on held-out old identities allowed
    promotion_min_new_rank1: 0.9  # share of changed people whose flipped photo must identify as themselves
    far_target: 0.001             # FAR at which τ is calibrated
    ray_address: ""               # Ray dashboard URL for job submission; "" = $RAY_ADDRESS, else a local head
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from enroll.gallery import GalleryError


@dataclass
class Settings:
    retrain_after_changes: int = 0
    retrain_epochs: int = 3
    retrain_steps_per_epoch: int = 20
    promotion_max_drop: float = 0.01
    promotion_min_new_rank1: float = 0.9
    far_target: float = 1e-3
    ray_address: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def load_settings(home: str | Path) -> Settings:
    path = Path(home) / "enroll.yaml"
    if not path.exists():
        return Settings()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise GalleryError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise GalleryError(f"{path} must hold a mapping of settings")
    known = {f.name: f.type for f in fields(Settings)}
    settings = Settings()
    for key, value in raw.items():
        if key not in known:
            raise GalleryError(f"unknown setting '{key}' in {path} (allowed: {', '.join(known)})")
        expected = type(getattr(settings, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise GalleryError(f"setting '{key}' in {path} must be {expected.__name__}, got {value!r}")
        setattr(settings, key, value)
    return settings
