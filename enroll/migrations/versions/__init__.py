"""The revisions, one file each; Alembic orders them by ``down_revision``."""
