"""The durable inbox: raw messages committed (deduplicated) before anything acts on them."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.sql.dml import Insert

from .clock import SystemClock
from .database import Database
from .errors import LeaseLostError
from .interfaces import Clock
from .message import extract_message_id
from .tables import Delivery, MailFolder, Message

log = logging.getLogger(__name__)

# Header fields that MTAs and delivery agents add on the way in: the same message
# delivered to two mailboxes differs only in these.
TRACE_FIELDS = frozenset(
    {
        b"received",
        b"return-path",
        b"delivered-to",
        b"x-original-to",
        b"x-delivered-to",
        b"envelope-to",
        b"x-envelope-to",
        b"x-envelope-from",
        b"x-rcpt-to",
        b"x-original-recipient",
        b"authentication-results",
        b"received-spf",
        b"x-spam-status",
        b"x-spam-score",
        b"x-spam-flag",
        b"x-spam-level",
        b"x-virus-scanned",
    }
)


def content_digest(raw: bytes) -> str:
    """SHA-256 of a message without its trace fields, equal for copies in different mailboxes."""
    text = raw.replace(b"\r\n", b"\n")
    end = text.find(b"\n\n")
    head, body = (text, b"") if end < 0 else (text[: end + 1], text[end + 2 :])
    digest = hashlib.sha256()
    keep = True
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if keep:
                digest.update(line + b"\n")
            continue
        name = line.split(b":", 1)[0].strip().lower()
        keep = name not in TRACE_FIELDS
        if keep:
            digest.update(line + b"\n")
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def dedup_key(message_id: str | None, digest: str, scope: str = "") -> str:
    """The identity of a stored message: Message-ID plus content, within a scope."""
    return hashlib.sha256(f"{scope}\0{message_id or ''}\0{digest}".encode()).hexdigest()


def insert_ignoring(conn: Connection, table: Table, index: Sequence[str]) -> Insert:
    """An INSERT that skips rows violating the unique index on `index` columns."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(index))
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(index))


def insert_updating(
    conn: Connection, table: Table, index: Sequence[str], columns: Sequence[str]
) -> Insert:
    """An INSERT that updates `columns` of the row already holding the unique `index` values."""
    statement: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        statement = postgresql.insert(table)
    else:
        from sqlalchemy.dialects import sqlite

        statement = sqlite.insert(table)
    result: Insert = statement.on_conflict_do_update(
        index_elements=list(index), set_={name: statement.excluded[name] for name in columns}
    )
    return result


@dataclass(frozen=True)
class Arrival:
    """One message as it arrived: its bytes and, for IMAP, its UID."""

    raw: bytes
    uid: int | None = None
    problem: str | None = None  # set when the server would not return the message


@dataclass(frozen=True)
class StoreOutcome:
    """What a store call did: rows created and copies already known."""

    stored: int
    known: int
    message_pks: tuple[int, ...]


MESSAGES: Table = Message.__table__  # type: ignore[assignment]
DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
FOLDERS: Table = MailFolder.__table__  # type: ignore[assignment]


class Inbox:
    """Stores arriving messages exactly once and wakes the runner."""

    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        merge_copies: bool = True,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.merge_copies = merge_copies
        self._listeners: list[Callable[[], None]] = [on_stored] if on_stored else []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call listener after every commit that stored new messages."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def _rows(self, raws: Iterable[bytes], scope: str) -> list[dict[str, Any]]:
        now = self.clock.now()
        rows = []
        for raw in raws:
            message_id = extract_message_id(raw)
            rows.append(
                {
                    "dedup_key": dedup_key(message_id, content_digest(raw), scope),
                    "message_id": message_id,
                    "sha256": hashlib.sha256(raw).hexdigest(),
                    "raw": raw,
                    "size": len(raw),
                    "received_at": now,
                    "state": "new",
                    "attempts": 0,
                    "source": None,
                    "mailbox": None,
                    "envelope_from": None,
                    "quarantine_reason": None,
                    "quarantined_at": None,
                }
            )
        return rows

    def _insert_messages(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Insert rows that are new; return dedup_key -> primary key for all of them."""
        if rows:
            conn.execute(insert_ignoring(conn, MESSAGES, ["dedup_key"]), rows)
        keys = list({row["dedup_key"] for row in rows})
        found: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            query = select(MESSAGES.c.dedup_key, MESSAGES.c.id).where(
                MESSAGES.c.dedup_key.in_(chunk)
            )
            found.update({key: pk for key, pk in conn.execute(query)})
        return found

    def store_imap(
        self,
        *,
        folder_id: int,
        mailbox: str,
        owner: str,
        uidvalidity: int,
        arrivals: Sequence[Arrival],
        highest_uid: int,
        disposition: str = "none",
    ) -> StoreOutcome:
        """Store fetched messages and advance the folder cursor in one transaction.

        Raises LeaseLostError (and stores nothing) when another process holds the lease.
        """
        scope = "" if self.merge_copies else mailbox
        rows = self._rows((a.raw for a in arrivals), scope)
        now = self.clock.now()
        # the server keeps its copy, and cursor and messages roll back together, so only
        # a disposition (which changes the server) needs the commit synced first
        durable = disposition != "none"
        for row, arrival in zip(rows, arrivals, strict=True):
            row.update(source="imap", mailbox=mailbox)
            if arrival.problem is not None:
                # kept as a quarantined record so that an admin sees it; one per UID
                row.update(
                    dedup_key=dedup_key(
                        None, "", f"unfetchable:{folder_id}:{uidvalidity}:{arrival.uid}"
                    ),
                    state="quarantined",
                    quarantine_reason=arrival.problem,
                    quarantined_at=now,
                )
        with self.db.transaction(durable=durable) as conn:
            moved = conn.execute(
                update(FOLDERS)
                .where(
                    FOLDERS.c.id == folder_id,
                    FOLDERS.c.lease_owner == owner,
                    FOLDERS.c.uidvalidity == uidvalidity,
                    FOLDERS.c.last_uid < highest_uid,
                )
                .values(last_uid=highest_uid, last_stored_at=now)
            )
            if moved.rowcount != 1:
                raise LeaseLostError(f"folder {folder_id}: lease or cursor changed under {owner}")
            before = self._count_existing(conn, rows)
            pks = self._insert_messages(conn, rows)
            if arrivals:
                deliveries = [
                    {
                        "message_pk": pks[row["dedup_key"]],
                        "channel": "imap",
                        "mailbox": mailbox,
                        "folder_id": folder_id,
                        "uidvalidity": uidvalidity,
                        "uid": arrival.uid,
                        "delivered_at": now,
                        "disposition": disposition,
                    }
                    for arrival, row in zip(arrivals, rows, strict=True)
                ]
                conn.execute(
                    insert_ignoring(conn, DELIVERIES, ["folder_id", "uidvalidity", "uid"]),
                    deliveries,
                )
        return self._outcome(rows, pks, before)

    def _count_existing(self, conn: Connection, rows: list[dict[str, Any]]) -> int:
        keys = list({row["dedup_key"] for row in rows})
        total = 0
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            total += len(
                conn.execute(select(MESSAGES.c.id).where(MESSAGES.c.dedup_key.in_(chunk))).all()
            )
        return total

    def store_delivered(
        self,
        raw: bytes,
        *,
        channel: str,
        envelope_from: str | None,
        recipients: Sequence[str],
        mailboxes: Sequence[str] | None = None,
    ) -> StoreOutcome:
        """Store one message handed over by a mail server (LMTP/SMTP) for its recipients."""
        boxes = list(mailboxes or recipients)
        now = self.clock.now()
        # one row for all recipients, or one per mailbox when copies are kept apart
        scope_of = {box: "" if self.merge_copies else box for box in boxes}
        rows: dict[str, dict[str, Any]] = {}
        for box, scope in scope_of.items():
            if scope not in rows:
                row = self._rows([raw], scope)[0]
                row.update(source=channel, mailbox=box, envelope_from=envelope_from)
                rows[scope] = row
        with self.db.transaction() as conn:
            before = self._count_existing(conn, list(rows.values()))
            pks = self._insert_messages(conn, list(rows.values()))
            conn.execute(
                DELIVERIES.insert(),
                [
                    {
                        "message_pk": pks[rows[scope_of[box]]["dedup_key"]],
                        "channel": channel,
                        "mailbox": box,
                        "recipient": rcpt,
                        "delivered_at": now,
                        "disposition": "none",
                    }
                    for rcpt, box in zip(recipients, boxes, strict=True)
                ],
            )
        return self._outcome(list(rows.values()), pks, before)

    def _outcome(
        self, rows: list[dict[str, Any]], pks: dict[str, int], before: int
    ) -> StoreOutcome:
        """Tell the listeners about new messages and say what was stored."""
        stored = len(pks) - before
        if stored:
            self._notify()
        return StoreOutcome(stored, len(rows) - stored, tuple(pks[r["dedup_key"]] for r in rows))

    def pending_dispositions(self, folder_id: int, uidvalidity: int) -> list[int]:
        """UIDs stored from this folder whose flag/move has not been done yet."""
        with self.db.reading() as conn:
            rows = conn.execute(
                select(DELIVERIES.c.uid).where(
                    DELIVERIES.c.folder_id == folder_id,
                    DELIVERIES.c.uidvalidity == uidvalidity,
                    DELIVERIES.c.disposition == "pending",
                )
            )
            return sorted(int(uid) for (uid,) in rows if uid is not None)

    def mark_disposed(self, folder_id: int, uidvalidity: int, uids: Sequence[int]) -> None:
        """Record that the server copies of these UIDs were flagged or moved."""
        with self.db.transaction() as conn:
            for start in range(0, len(uids), 500):
                conn.execute(
                    update(DELIVERIES)
                    .where(
                        DELIVERIES.c.folder_id == folder_id,
                        DELIVERIES.c.uidvalidity == uidvalidity,
                        DELIVERIES.c.uid.in_(list(uids[start : start + 500])),
                    )
                    .values(disposition="done")
                )
