"""Messages the runner could not process: listed with their reason, re-processed on demand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from .database import Database
from .inbox import MESSAGES


@dataclass(frozen=True)
class Quarantined:
    """One quarantined message."""

    pk: int
    message_id: str | None
    mailbox: str | None
    size: int
    received_at: datetime
    quarantined_at: datetime | None
    reason: str


def list_quarantined(db: Database, limit: int = 1000) -> list[Quarantined]:
    """The quarantined messages, oldest first."""
    with db.reading() as conn:
        rows = conn.execute(
            select(
                MESSAGES.c.id,
                MESSAGES.c.message_id,
                MESSAGES.c.mailbox,
                MESSAGES.c.size,
                MESSAGES.c.received_at,
                MESSAGES.c.quarantined_at,
                MESSAGES.c.quarantine_reason,
            )
            .where(MESSAGES.c.state == "quarantined")
            .order_by(MESSAGES.c.id)
            .limit(limit)
        ).all()
    return [Quarantined(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or "") for r in rows]


def retry(db: Database, pks: Sequence[int] | None) -> int:
    """Put quarantined messages (all when pks is None) back in the queue; return the count."""
    query = update(MESSAGES).where(MESSAGES.c.state == "quarantined")
    if pks is not None:
        query = query.where(MESSAGES.c.id.in_(list(pks)))
    with db.transaction() as conn:
        count = conn.execute(
            query.values(state="new", attempts=0, quarantine_reason=None, quarantined_at=None)
        ).rowcount
    return int(count)


def raw_bytes(db: Database, pk: int) -> bytes | None:
    """The stored bytes of one message, as they arrived."""
    with db.reading() as conn:
        value = conn.execute(select(MESSAGES.c.raw).where(MESSAGES.c.id == pk)).scalar()
    return None if value is None else bytes(value)
