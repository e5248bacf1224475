"""Held-out faces and job results (the counterpart of SQLite schema version 2).

Existing faces are not held out (their person's next new photo may be), existing jobs have no
recorded figures.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE faces ADD COLUMN held_out BOOLEAN NOT NULL DEFAULT false")
    op.execute("ALTER TABLE jobs ADD COLUMN result JSONB NOT NULL DEFAULT '{}'")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN result")
    op.execute("ALTER TABLE faces DROP COLUMN held_out")
