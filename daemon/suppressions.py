"""The suppression list: addresses nothing automatic is sent to (auto-replies, campaigns)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, select

from .inbox import insert_ignoring
from .tables import Suppression

SUPPRESSIONS: Table = Suppression.__table__  # type: ignore[assignment]
REASONS = ("hard-bounce", "complaint", "unsubscribe", "manual")


def suppress(
    conn: Connection,
    entries: Iterable[tuple[str, str, str | None, int | None]],
    when: datetime,
) -> int:
    """Add (address, reason, detail, message_pk) rows; an address already listed keeps its row."""
    rows = {
        address.strip().lower(): {
            "address": address.strip().lower()[:320],
            "reason": reason,
            "detail": (detail or None) and detail[:2000],
            "message_pk": message_pk,
            "created_at": when,
        }
        for address, reason, detail, message_pk in entries
        if address and "@" in address
    }
    if not rows:
        return 0
    ordered = [rows[key] for key in sorted(rows)]
    statement = insert_ignoring(conn, SUPPRESSIONS, ["address"]).returning(SUPPRESSIONS.c.address)
    return len(conn.execute(statement, ordered).all())


def suppressed(conn: Connection, addresses: Iterable[str]) -> dict[str, str]:
    """Which of addresses are suppressed, with the reason."""
    wanted = sorted({a.strip().lower() for a in addresses if a})
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for address, reason in conn.execute(
            select(SUPPRESSIONS.c.address, SUPPRESSIONS.c.reason).where(
                SUPPRESSIONS.c.address.in_(chunk)
            )
        ):
            found[address] = reason
    return found


def unsuppress(conn: Connection, address: str) -> bool:
    """Remove an address from the list (an admin's decision)."""
    return bool(
        conn.execute(
            delete(SUPPRESSIONS).where(SUPPRESSIONS.c.address == address.strip().lower())
        ).rowcount
    )


def listing(conn: Connection, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest suppressions first."""
    rows = conn.execute(
        select(SUPPRESSIONS).order_by(SUPPRESSIONS.c.created_at.desc()).limit(limit)
    ).all()
    return [
        {
            "address": r.address,
            "reason": r.reason,
            "detail": r.detail,
            "message_pk": r.message_pk,
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]
