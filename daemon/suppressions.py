"""The suppression list: addresses some or all automatic mail is not sent to.

Scopes: `all` stops everything automatic (auto-replies, surveys, campaigns); `marketing`
stops every campaign; `list:<name>` stops the campaigns of one list. Auto-replies and
surveys ask for `all` only; a campaign asks for all three that apply to its list.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, select

from .inbox import insert_ignoring
from .tables import Suppression

SUPPRESSIONS: Table = Suppression.__table__  # type: ignore[assignment]
REASONS = ("hard-bounce", "soft-bounce", "complaint", "unsubscribe", "manual")
SCOPES = ("all", "marketing")


def list_scope(name: str) -> str:
    """The scope of one mailing list."""
    return f"list:{name}"


def campaign_scopes(list_name: str) -> tuple[str, ...]:
    """Every scope that stops a campaign to list_name."""
    return ("all", "marketing", list_scope(list_name))


def suppress(
    conn: Connection,
    entries: Iterable[tuple[str, str, str | None, int | None]],
    when: datetime,
    scope: str = "all",
) -> int:
    """Add (address, reason, detail, message_pk) rows in scope; a listed address keeps its row."""
    rows = {
        address.strip().lower(): {
            "address": address.strip().lower()[:320],
            "scope": scope,
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
    statement = insert_ignoring(conn, SUPPRESSIONS, ["address", "scope"]).returning(
        SUPPRESSIONS.c.address
    )
    return len(conn.execute(statement, ordered).all())


def suppressed(
    conn: Connection, addresses: Iterable[str], scopes: Iterable[str] = ("all",)
) -> dict[str, str]:
    """Which of addresses are suppressed in any of scopes, with the reason."""
    wanted_scopes = sorted(set(scopes))
    wanted = sorted({a.strip().lower() for a in addresses if a})
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for address, reason in conn.execute(
            select(SUPPRESSIONS.c.address, SUPPRESSIONS.c.reason).where(
                SUPPRESSIONS.c.address.in_(chunk), SUPPRESSIONS.c.scope.in_(wanted_scopes)
            )
        ):
            found[address] = reason
    return found


def unsuppress(conn: Connection, address: str, scope: str | None = None) -> bool:
    """Remove an address from the list in one scope, or in every scope (an admin's decision)."""
    statement = delete(SUPPRESSIONS).where(SUPPRESSIONS.c.address == address.strip().lower())
    if scope is not None:
        statement = statement.where(SUPPRESSIONS.c.scope == scope)
    return bool(conn.execute(statement).rowcount)


def listing(conn: Connection, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest suppressions first."""
    rows = conn.execute(
        select(SUPPRESSIONS).order_by(SUPPRESSIONS.c.created_at.desc()).limit(limit)
    ).all()
    return [
        {
            "address": r.address,
            "scope": r.scope,
            "reason": r.reason,
            "detail": r.detail,
            "message_pk": r.message_pk,
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]
