"""Secrets this installation makes for itself, kept in the database so every process agrees."""

from __future__ import annotations

import secrets

from sqlalchemy import Table, select

from .database import Database
from .inbox import insert_ignoring
from .tables import InstanceKey

KEYS: Table = InstanceKey.__table__  # type: ignore[assignment]


def instance_key(db: Database, name: str) -> bytes:
    """The key called name: created at random on first use, the same ever after."""
    with db.reading() as conn:
        value = conn.execute(select(KEYS.c.value).where(KEYS.c.name == name)).scalar()
    if value is None:
        with db.transaction() as conn:
            conn.execute(
                insert_ignoring(conn, KEYS, ["name"]),
                [{"name": name, "value": secrets.token_hex(32)}],
            )
            value = conn.execute(select(KEYS.c.value).where(KEYS.c.name == name)).scalar_one()
    return bytes.fromhex(value)
