"""The one owner of a FACENET_HOME's layout (described for people in enroll/layout.md).

Every path under a home is built here, and the files whose format is the home's own are read and
written here: the ``PRODUCTION`` pointer, each model version's ``meta.json``, and the gallery's
(name, vector) rows as an export reads them. Everyone else (enroll's modules, the experiments)
asks this module, so a change of layout is a change of this file and layout.md only. serving/
never imports it: enroll hands serving a model and a gallery (``enroll.serving_export``).
"""
from __future__ import annotations

import json
import os
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import numpy as np

from enroll.gallery import vector_matrix
from enroll.schema import EMBEDDING_ROWS
from trainer.files import atomic_write

ENV = "FACENET_HOME"
DEFAULT_HOME = ".facenet"


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """``home``, else $FACENET_HOME, else ./.facenet, absolute."""
    return Path(home or os.environ.get(ENV) or DEFAULT_HOME).expanduser().resolve()


# ------------------------------------------------------------------------------- paths
def gallery_db(home) -> Path:
    return Path(home) / "gallery.db"


def crops_dir(home) -> Path:
    return Path(home) / "crops"


def models_dir(home) -> Path:
    return Path(home) / "models"


def version_dir(home, version: int) -> Path:
    return models_dir(home) / str(int(version))


def saved_model_dir(home, version: int) -> Path:
    """The Keras SavedModel of model ``version``."""
    return version_dir(home, version) / "model"


def meta_file(home, version: int) -> Path:
    return version_dir(home, version) / "meta.json"


def verification_head_file(home, version: int) -> Path:
    """Model ``version``'s Siamese verification head (enroll/verification_head.py): JSON coefficients."""
    return version_dir(home, version) / "verification_head.json"


def production_file(home) -> Path:
    return Path(home) / "PRODUCTION"


def serving_dir(home) -> Path:
    """The TF-Serving export base path: ``<name>/<version>/`` below it (serving.versions)."""
    return Path(home) / "serving"


def retrain_dir(home) -> Path:
    return Path(home) / "retrain"


def retrain_people_dir(home, job_id: int) -> Path:
    """The identity folder of crops exported for retraining job ``job_id``."""
    return retrain_dir(home) / f"job-{int(job_id)}" / "people"


def retraining_exports(home) -> list[Path]:
    """Every ``retrain/job-*/people/<name>/`` folder, of every job."""
    return sorted(retrain_dir(home).glob("job-*/people/*"))


def runs_dir(home) -> Path:
    """Where retraining jobs write their training runs (``retrain-job<id>-*/``)."""
    return Path(home) / "runs"


def settings_file(home) -> Path:
    return Path(home) / "enroll.yaml"


# ------------------------------------------------------------------------------- files
def read_production(home) -> int | None:
    """The production version; None when there is none yet. ValueError when the file holds no number."""
    try:
        return int(production_file(home).read_text().strip())
    except FileNotFoundError:
        return None


def write_production(home, version: int) -> None:
    """Point PRODUCTION at ``version``: written aside, synced, renamed over the old file."""
    atomic_write(production_file(home), f"{int(version)}\n", sync=True)  # the old number or the new, never half


def read_meta(home, version: int) -> dict:
    """Model ``version``'s meta.json; OSError / ValueError when it is missing or unreadable."""
    return json.loads(meta_file(home, version).read_text())


def face_template(meta: dict) -> str:
    """The face framing a version's model was trained on (trainer/align.py ``TEMPLATES``): every
    photo it embeds is aligned to it. Versions registered before framings were recorded are ArcFace's."""
    from trainer.align import DEFAULT_TEMPLATE

    return str(meta.get("face_template") or DEFAULT_TEMPLATE)


def read_verification_head(home, version: int) -> dict | None:
    """Model ``version``'s verification head; None when none was trained yet. ValueError when unreadable."""
    try:
        return json.loads(verification_head_file(home, version).read_text())
    except FileNotFoundError:
        return None


def write_verification_head(home, version: int, head: dict) -> None:
    """Store model ``version``'s verification head: written aside, synced, renamed into place."""
    atomic_write(verification_head_file(home, version), json.dumps(head, indent=1), sync=True)


def store_version(home, model, meta: dict) -> int:
    """Save ``model`` and its meta.json as the next model version; returns the version.

    Saved under a staging name first, then the next free version is claimed by renaming: a rename
    onto an existing version directory fails, so two registrations never share a number, and a
    version directory is never seen half-written.
    """
    root = models_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{uuid.uuid4().hex[:8]}"
    model.save(str(staging / "model"), include_optimizer=False, save_format="tf")
    version = max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0) + 1
    while True:
        (staging / "meta.json").write_text(json.dumps({"version": version, **meta}, indent=1))
        try:
            os.rename(staging, version_dir(home, version))
            return version
        except OSError:
            if not version_dir(home, version).exists():
                raise
            version += 1


def gallery_rows(home, version: int, notes: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(names, vectors [G, D] float32) enrolled under model ``version``, one row per face, as an
    export serves them; empty when there is no database or no vectors yet (the reason is appended
    to ``notes``). Opened read-only, so it never creates a database nor blocks an enrolment (WAL).
    """
    notes = notes if notes is not None else []
    empty = ([], np.zeros((0, 0), np.float32))
    db = gallery_db(home)
    if not db.exists():
        notes.append(f"no gallery database at {db}")
        return empty
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        # A database whose first opener has not created the tables yet is an empty gallery.
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"people", "faces", "embeddings"} <= tables:
            notes.append(f"{db} has no enrolment tables yet")
            return empty
        rows = conn.execute(EMBEDDING_ROWS, (int(version),)).fetchall()
    if not rows:
        notes.append(f"no embeddings for model version {version} in {db}")
        return empty
    return vector_matrix(rows)
