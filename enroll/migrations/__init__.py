"""Alembic migrations of the PostgreSQL gallery schema (see enroll/postgres_schema.py)."""
