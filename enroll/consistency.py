"""The gallery's invariants, checked against the database and the crops together (files for SQLite,
rows for PostgreSQL).

A consistent gallery has no half person: every person has faces, every face has its crop on disk
(with the bytes its name promises) and at least one embedding, every embedding belongs to a face,
all vectors of a model version have one length, and no crop file is left that no face names.
``model_version`` adds "every face has a vector for this version" (the production one).
"""
from __future__ import annotations

import hashlib


def sqlite_problems(db, crops, model_version: int | None = None, verify_crops: bool = True) -> list[str]:
    """Broken invariants of a ``SqliteGallery``; ``db`` must be inside its write transaction."""
    problems = [f"sqlite integrity: {r[0]}" for r in db.execute("PRAGMA integrity_check") if r[0] != "ok"]
    problems += [f"foreign key violation in {r[0]} row {r[1]}" for r in db.execute("PRAGMA foreign_key_check")]
    problems += [f"person {r[0]!r} has no faces" for r in db.execute(
        "SELECT name FROM people p WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.person_id = p.id)")]
    problems += [f"face {r[0]} belongs to no person" for r in db.execute(
        "SELECT id FROM faces f WHERE NOT EXISTS (SELECT 1 FROM people p WHERE p.id = f.person_id)")]
    problems += [f"face {r[0]} has no embedding" for r in db.execute(
        "SELECT id FROM faces f WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.face_id = f.id)")]
    problems += [f"embedding (version {r[0]}) of missing face {r[1]}" for r in db.execute(
        "SELECT model_version, face_id FROM embeddings e WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.id = e.face_id)")]
    problems += [f"model version {r[0]} mixes vector lengths" for r in db.execute(
        "SELECT model_version FROM embeddings GROUP BY model_version HAVING COUNT(DISTINCT length(vector)) > 1")]
    if model_version is not None:
        problems += [f"face {r[0]} has no embedding for model version {model_version}" for r in db.execute(
            "SELECT id FROM faces f WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.face_id = f.id "
            "AND e.model_version = ?)", (int(model_version),))]
    named = {r[0] for r in db.execute("SELECT DISTINCT sha256 FROM faces")}
    return problems + crop_problems(named, crops, verify_crops)


def crop_problems(named: set[str], crops, verify_crops: bool = True) -> list[str]:
    """Crops named by faces but missing or altered on disk, files nobody names, stray leftovers."""
    on_disk, strays = crops.scan()
    problems = [f"crop {sha[:12]}… is missing" for sha in sorted(named - on_disk)]
    problems += [f"orphan crop {sha[:12]}… (no face names it)" for sha in sorted(on_disk - named)]
    problems += [f"stray file {path.name} in crops/" for path in strays]
    if verify_crops:
        problems += [f"crop {sha[:12]}… does not match its hash" for sha in sorted(named & on_disk)
                     if hashlib.sha256(crops.read(sha)).hexdigest() != sha]
    return problems


def postgres_problems(db, model_version: int | None = None, verify_crops: bool = True) -> list[str]:
    """Broken invariants of a ``PostgresGallery`` (crops are rows there; foreign keys hold the rest
    of the references); ``db`` must be inside its write transaction."""
    def lines(template: str, sql: str, params=()) -> list[str]:
        return [template.format(*row) for row in db.execute(sql, params)]

    problems = lines("person {0!r} has no faces",
                     "SELECT name FROM people p WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.person_id = p.id)")
    problems += lines("face {0} has no embedding",
                      "SELECT id FROM faces f WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.face_id = f.id)")
    problems += lines("model version {0} mixes vector lengths", "SELECT model_version FROM embeddings "
                      "GROUP BY model_version HAVING COUNT(DISTINCT length(vector)) > 1")
    if model_version is not None:
        problems += lines(f"face {{0}} has no embedding for model version {int(model_version)}",
                          "SELECT id FROM faces f WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                          "WHERE e.face_id = f.id AND e.model_version = %s)", (int(model_version),))
    problems += lines("orphan crop {0:.12}… (no face names it)",
                      "SELECT sha256 FROM crops c WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.sha256 = c.sha256)")
    if verify_crops:
        problems += lines("crop {0:.12}… does not match its hash",
                          "SELECT sha256 FROM crops WHERE encode(sha256(data), 'hex') <> sha256")
    return problems
