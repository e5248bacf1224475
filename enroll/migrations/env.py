"""Alembic's entry point for the gallery: run the revisions on the connection ``upgrade`` hands in.

The whole upgrade is one transaction that first takes the migration advisory lock, so replicas
opening a new database together migrate it once (the others wait, then find it at the head).
"""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(context.config.attributes['lock'])})")
    context.run_migrations()
