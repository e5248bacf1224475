"""The API's bearer tokens (the counterpart of SQLite schema version 3; enroll/tokens.py).

Only the SHA-256 of each secret is stored; ``revoked`` is set, never deleted, so that
``enroll token list`` keeps the history.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE api_tokens (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name TEXT NOT NULL,"
               " scopes TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE, created DOUBLE PRECISION NOT NULL,"
               " last_used DOUBLE PRECISION, revoked DOUBLE PRECISION)")


def downgrade() -> None:
    op.execute("DROP TABLE api_tokens")
