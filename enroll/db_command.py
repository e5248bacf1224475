"""``enroll db upgrade``: bring the gallery's schema to this version of enroll, and say from what.

Opening the gallery migrates it anyway (enroll/postgres_schema.py, enroll/schema.py); the command
lets an operator do it once, before starting replicas or after installing a new enroll, and see
the revision it was at. It works on whichever backend ``enroll.backends`` chooses.
"""
from __future__ import annotations


def add_parser(sub, common) -> None:
    p = sub.add_parser("db", parents=[common], help="gallery database maintenance: `enroll db upgrade`")
    p.add_argument("action", choices=("upgrade",), help="upgrade: apply the schema migrations this enroll ships")


def cmd_db(args, home, notes):
    from enroll.backends import upgrade_schema

    result = upgrade_schema(home)
    changed = "already at" if result["before"] == result["after"] else f"upgraded from {result['before']} to"
    return result, [f"{result['backend']} gallery {result['database']}: {changed} schema {result['after']}"]
