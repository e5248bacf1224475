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

from dataclasses import asdict, dataclass
from pathlib import Path

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
    from trainer.config import ConfigError, apply_fields, read_mapping

    path = Path(home) / "enroll.yaml"
    settings = Settings()
    if path.exists():
        try:
            apply_fields(settings, read_mapping(path, "settings file"), lambda key: f"setting '{key}' in {path}")
        except ConfigError as exc:
            raise GalleryError(str(exc)) from None
    return settings
