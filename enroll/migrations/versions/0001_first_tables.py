"""The first gallery tables (the counterpart of SQLite schema version 1), plus the crops themselves.

Crops live in the database (``crops.data``, PNG bytes) rather than in files: API replicas on
several nodes share the gallery, and a crop then commits and is deleted in the same transaction as
the face that names it. PNG is already compressed, so its storage skips TOAST compression.

Revision ID: 0001
Revises: none
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = [
    "CREATE TABLE people (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " created DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE crops (sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL)",
    "ALTER TABLE crops ALTER COLUMN data SET STORAGE EXTERNAL",
    "CREATE TABLE faces (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " person_id BIGINT NOT NULL REFERENCES people(id), sha256 TEXT NOT NULL REFERENCES crops(sha256),"
    " source TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX faces_person ON faces(person_id)",
    "CREATE INDEX faces_sha ON faces(sha256)",
    "CREATE TABLE embeddings (model_version INTEGER NOT NULL, face_id BIGINT NOT NULL REFERENCES faces(id),"
    " vector BYTEA NOT NULL, PRIMARY KEY (model_version, face_id))",
    "CREATE INDEX embeddings_face ON embeddings(face_id)",
    "CREATE TABLE changes (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL,"
    " name TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE jobs (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL,"
    " state TEXT NOT NULL, params JSONB NOT NULL, detail TEXT NOT NULL DEFAULT '',"
    " created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL)",
]


def upgrade() -> None:
    for statement in TABLES:
        op.execute(statement)


def downgrade() -> None:
    for table in ("jobs", "changes", "embeddings", "faces", "crops", "people"):
        op.execute(f"DROP TABLE {table}")
