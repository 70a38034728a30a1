"""The outbox ledger: every outgoing mail is a row first; a send is claimed durably.

States: queued -> sending -> sent | failed, or back to queued (4xx, timeout), or
uncertain (handed to the relay but its reply never seen, or the sending process died).
An uncertain row is never sent again unless an admin asks (`mailcare outbox resend`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, and_, func, or_, select, update

from .database import Database
from .folders import holder_is_dead
from .inbox import insert_ignoring
from .interfaces import Clock
from .tables import Outgoing

log = logging.getLogger(__name__)

OUTBOX: Table = Outgoing.__table__  # type: ignore[assignment]
STATES = ("queued", "sending", "sent", "failed", "uncertain", "cancelled")
# (outbox id, new state, detail, retry in seconds) for one row a sender handled
Outcome = tuple[int, str, str, float | None]


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A rendered mail ready to be queued; `key` makes queuing it idempotent."""

    key: str
    kind: str
    message_id: str
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    message_pk: int | None = None
    conversation_id: int | None = None
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """A claimed row, to be handed to the relay."""

    id: int
    message_id: str
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int
    created_at: datetime


def _recipients(text: str) -> tuple[str, ...]:
    return tuple(line for line in text.split("\n") if line)


class Outbox:
    """Queue, claim and settle outgoing mail; shared by every process on one database."""

    def __init__(self, db: Database, clock: Clock, owner: str) -> None:
        self.db = db
        self.clock = clock
        self.owner = owner
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call listener after mail was queued by this process."""
        self._listeners.append(listener)

    def notify(self) -> None:
        """Tell listeners (the sender) that new rows may be waiting."""
        for listener in self._listeners:
            listener()

    def enqueue(self, conn: Connection, mails: Iterable[OutgoingMail]) -> int:
        """Insert rows in the caller's transaction; a key already queued is left alone."""
        now = self.clock.now()
        rows = [
            {
                "key": mail.key,
                "kind": mail.kind,
                "message_id": mail.message_id,
                "mail_from": mail.mail_from,
                "recipients": "\n".join(mail.recipients),
                "raw": mail.raw,
                "state": "queued",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "message_pk": mail.message_pk,
                "conversation_id": mail.conversation_id,
                "rule": mail.rule,
            }
            for mail in mails
        ]
        if not rows:
            return 0
        rows.sort(key=lambda row: str(row["key"]))
        statement = insert_ignoring(conn, OUTBOX, ["key"]).returning(OUTBOX.c.id)
        return len(conn.execute(statement, rows).all())

    def claim(self, limit: int, ttl: float) -> list[Pending]:
        """Durably mark up to limit due rows as `sending` by this process, oldest first."""
        return self.exchange((), (), limit, ttl)

    def exchange(
        self, outcomes: Sequence[Outcome], unsent: Sequence[int], limit: int, ttl: float
    ) -> list[Pending]:
        """Settle the last round and claim the next in one transaction (one lock, one sync).

        The transaction is synced when it claims: a claim lost to a power cut would let a
        sent message go out again. A settlement needs no sync: if it is lost, the row stays
        `sending`, and recovery turns it into `uncertain`, never into a second send.
        """
        if not outcomes and not unsent and limit <= 0:
            return []
        with self.db.transaction(durable=limit > 0) as conn:
            self._settle(conn, outcomes)
            self._release(conn, unsent)
            return self._claim(conn, limit, ttl) if limit > 0 else []

    def _claim(self, conn: Connection, limit: int, ttl: float) -> list[Pending]:
        now = self.clock.now()
        query = (
            select(OUTBOX.c.id)
            .where(OUTBOX.c.state == "queued", OUTBOX.c.next_attempt_at <= now)
            .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
            .limit(limit)
        )
        if self.db.is_postgresql:
            query = query.with_for_update(skip_locked=True)
        ids = list(conn.execute(query).scalars())
        if not ids:
            return []
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id.in_(ids), OUTBOX.c.state == "queued")
            .values(
                state="sending",
                claimed_by=self.owner,
                next_attempt_at=now + timedelta(seconds=ttl),
                attempts=OUTBOX.c.attempts + 1,
            )
        )
        rows = conn.execute(
            select(
                OUTBOX.c.id,
                OUTBOX.c.message_id,
                OUTBOX.c.mail_from,
                OUTBOX.c.recipients,
                OUTBOX.c.raw,
                OUTBOX.c.attempts,
                OUTBOX.c.created_at,
            )
            .where(OUTBOX.c.id.in_(ids), OUTBOX.c.claimed_by == self.owner)
            .order_by(OUTBOX.c.id)
        ).all()
        return [
            Pending(
                r.id,
                r.message_id,
                r.mail_from,
                _recipients(r.recipients),
                bytes(r.raw),
                r.attempts,
                r.created_at,
            )
            for r in rows
        ]

    def _settle(self, conn: Connection, outcomes: Sequence[Outcome]) -> None:
        now = self.clock.now()
        for pk, state, detail, retry_in in outcomes:
            values: dict[str, Any] = {"state": state, "claimed_by": None}
            if state == "queued":
                values["next_attempt_at"] = now + timedelta(seconds=retry_in or 0)
                values["last_error"] = detail or None
            else:
                values["finished_at"] = now
                values["last_error"] = None if state == "sent" and not detail else detail
            conn.execute(
                update(OUTBOX)
                .where(
                    OUTBOX.c.id == pk,
                    OUTBOX.c.state == "sending",
                    OUTBOX.c.claimed_by == self.owner,
                )
                .values(**values)
            )

    def _release(self, conn: Connection, ids: Sequence[int]) -> None:
        if not ids:
            return
        conn.execute(
            update(OUTBOX)
            .where(
                OUTBOX.c.id.in_(list(ids)),
                OUTBOX.c.state == "sending",
                OUTBOX.c.claimed_by == self.owner,
            )
            .values(
                state="queued",
                claimed_by=None,
                next_attempt_at=self.clock.now(),
                attempts=OUTBOX.c.attempts - 1,
            )
        )

    def recover(self) -> int:
        """Mark rows left `sending` by a dead process (or past their claim) as uncertain."""
        now = self.clock.now()
        with self.db.reading() as conn:
            rows = conn.execute(
                select(OUTBOX.c.claimed_by, OUTBOX.c.next_attempt_at).where(
                    OUTBOX.c.state == "sending"
                )
            ).all()
        owners = {r.claimed_by for r in rows}
        dead = [o for o in owners if o and o != self.owner and holder_is_dead(o)]
        expired = any(r.next_attempt_at < now for r in rows)
        if not dead and not expired:
            return 0
        with self.db.transaction(durable=False) as conn:
            changed = conn.execute(
                update(OUTBOX)
                .where(
                    OUTBOX.c.state == "sending",
                    or_(OUTBOX.c.claimed_by.in_(dead), OUTBOX.c.next_attempt_at < now),
                )
                .values(
                    state="uncertain",
                    claimed_by=None,
                    finished_at=now,
                    last_error="the sending process stopped while this message was being "
                    "handed to the relay; it may or may not have been delivered",
                )
            ).rowcount
        if changed:
            log.warning(
                "%d outgoing messages are uncertain (list: mailcare outbox list --state "
                "uncertain; send again: mailcare outbox resend)",
                changed,
            )
        return int(changed)

    def counts(self) -> dict[str, int]:
        """Rows per state."""
        with self.db.reading() as conn:
            rows = conn.execute(select(OUTBOX.c.state, func.count()).group_by(OUTBOX.c.state)).all()
        return {state: int(count) for state, count in rows}

    def listing(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Rows (without their bytes) for `mailcare outbox list`, newest first."""
        query = select(
            OUTBOX.c.id,
            OUTBOX.c.kind,
            OUTBOX.c.state,
            OUTBOX.c.message_id,
            OUTBOX.c.recipients,
            OUTBOX.c.attempts,
            OUTBOX.c.created_at,
            OUTBOX.c.finished_at,
            OUTBOX.c.last_error,
        ).order_by(OUTBOX.c.id.desc())
        if state:
            query = query.where(OUTBOX.c.state == state)
        with self.db.reading() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [
            {
                "id": r.id,
                "kind": r.kind,
                "state": r.state,
                "message_id": r.message_id,
                "recipients": list(_recipients(r.recipients)),
                "attempts": r.attempts,
                "created_at": r.created_at.isoformat(),
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                "last_error": r.last_error,
            }
            for r in rows
        ]

    def resend(self, ids: Sequence[int] | None, states: Sequence[str] = ("uncertain",)) -> int:
        """Queue rows in the given states again (all of them when ids is None)."""
        condition: ColumnElement[bool] = OUTBOX.c.state.in_(list(states))
        if ids is not None:
            condition = and_(condition, OUTBOX.c.id.in_(list(ids)))
        with self.db.transaction() as conn:
            changed = conn.execute(
                update(OUTBOX)
                .where(condition)
                .values(
                    state="queued",
                    claimed_by=None,
                    finished_at=None,
                    next_attempt_at=self.clock.now(),
                )
            ).rowcount
        if changed:
            self.notify()
        return int(changed)
