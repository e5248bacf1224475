"""Shared test fixtures. ``../shared`` (real photos, tfa oracles) sits beside the checkout here and in CI."""
import os
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACENET_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = SHARED / "data"
    if not root.is_dir():
        pytest.skip(f"real photos not available: {root} is absent (set FACENET_SHARED to the shared/ folder)")
    return root
