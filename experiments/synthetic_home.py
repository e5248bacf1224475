"""A FACENET_HOME for the serving benchmarks: a production model and a SQLite gallery of N synthetic
people (one random unit vector each), made in seconds rather than through N enrolments.

The people are written straight into the gallery's tables (enroll/schema.py owns them), in one
transaction, with the class-change log the exporters read; their crops are not written (nothing
here reads them). Enrolments made afterwards go through the real ``SqliteGallery.add_person``.
"""
from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path

import numpy as np

MODEL_VERSION = 1


def unit_vectors(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def install_model(home: Path, model, threshold: float) -> None:
    """``model`` as the home's production model version 1 (τ = ``threshold``)."""
    from enroll import home as layout

    model.save(str(layout.saved_model_dir(home, MODEL_VERSION)), include_optimizer=False)
    meta = {"version": MODEL_VERSION, "model_name": model.name, "image_size": int(model.input_shape[1]),
            "embedding_dim": int(model.output_shape[-1]), "threshold": float(threshold)}
    layout.meta_file(home, MODEL_VERSION).write_text(json.dumps(meta))
    layout.write_production(home, MODEL_VERSION)


def fill_gallery(home: Path, vectors: np.ndarray, chunk: int = 50_000) -> float:
    """Enrol one more synthetic person per row of ``vectors`` under model version 1 (appended to
    those already there, named by their row id); returns seconds."""
    from enroll import home as layout
    from enroll.schema import connect, create_schema

    start, now = time.perf_counter(), time.time()
    layout.gallery_db(home).parent.mkdir(parents=True, exist_ok=True)
    with closing(connect(layout.gallery_db(home))) as db:
        db.execute("PRAGMA synchronous=OFF")  # a benchmark fixture: nothing to keep after a crash
        db.execute("BEGIN IMMEDIATE")
        create_schema(db)
        first = max(db.execute("SELECT COALESCE(MAX(id), 0) FROM people").fetchone()[0],
                    db.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0]) + 1
        for lo in range(0, len(vectors), chunk):
            ids = range(first + lo, first + min(lo + chunk, len(vectors)))
            db.executemany("INSERT INTO people (id, name, created) VALUES (?, ?, ?)",
                           ((i, f"person-{i:07d}", now) for i in ids))
            db.executemany("INSERT INTO faces (id, person_id, sha256, source, created) VALUES (?, ?, ?, ?, ?)",
                           ((i, i, f"{i:064x}", "synthetic", now) for i in ids))
            db.executemany("INSERT INTO embeddings (model_version, face_id, vector) VALUES (?, ?, ?)",
                           ((MODEL_VERSION, i, vectors[i - first].tobytes()) for i in ids))
        db.execute("INSERT INTO changes (kind, name, created) VALUES ('add', ?, ?)", (f"{len(vectors)} synthetic", now))
        db.execute("COMMIT")
    return time.perf_counter() - start


def make_home(home: Path, model, people: int, threshold: float = 0.05, seed: int = 0) -> Path:
    """A home holding ``model`` as production and ``people`` synthetic enrolled people."""
    home = Path(home)
    install_model(home, model, threshold)
    fill_gallery(home, unit_vectors(people, int(model.output_shape[-1]), seed))
    return home
