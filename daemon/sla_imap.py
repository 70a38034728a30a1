"""What agents do in their mail clients, seen over IMAP: replies filed in the Sent folder
count as responses; a message moved into the resolved folder, or given the resolved
keyword, resolves its conversation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from imapclient.imapclient import SENT
from sqlalchemy import Connection, and_, func, select

from .clock import utc
from .database import Database
from .folder_scan import FolderScan, header_of
from .folders import FolderLedger
from .inbox import DELIVERIES, MESSAGES, insert_ignoring
from .interfaces import Clock
from .message import parse_message
from .rules import Rules
from .screening import Identity
from .settings import Mailbox
from .sla import CLOCKS, CONVERSATIONS, NewEvent, SlaBook
from .threads import REFS, TicketTags

log = logging.getLogger(__name__)

FETCH_BATCH = 200
_FIELDS = "MESSAGE-ID IN-REPLY-TO REFERENCES SUBJECT DATE AUTO-SUBMITTED"
_CLOCK_SKEW = timedelta(minutes=5)


def response_time(date: datetime | None, internal: datetime | None, now: datetime) -> datetime:
    """When a filed reply was sent: its Date, unless that is later than the server saw it."""
    stored = utc(internal) if internal is not None else now
    if date is None:
        return stored
    sent = utc(date)
    return sent if stored - timedelta(days=1) <= sent <= stored + _CLOCK_SKEW else stored


def find_conversation(
    conn: Connection, scope: str | None, refs: Sequence[str], subject: str, tags: TicketTags
) -> int | None:
    """The conversation a reply belongs to: by the ids it refers to, else by its ticket tag.

    scope None looks in every mailbox's threads.
    """
    wanted = [r for r in refs if r]
    if wanted:
        query = select(REFS.c.ref, REFS.c.conversation_id).where(REFS.c.ref.in_(wanted))
        if scope is not None:
            query = query.where(REFS.c.scope == scope)
        rows = dict(conn.execute(query).all())
        for ref in wanted:
            if ref in rows:
                return int(rows[ref])
    tag = tags.find(subject)
    if tag is not None:
        found = conn.execute(select(CONVERSATIONS.c.id).where(CONVERSATIONS.c.id == tag)).scalar()
        return int(found) if found is not None else None
    return None


def conversation_of_message(conn: Connection, message_id: str | None) -> int | None:
    """The conversation of the stored message with this (normalised) Message-ID."""
    if not message_id:
        return None
    found = conn.execute(
        select(MESSAGES.c.conversation_id)
        .where(MESSAGES.c.message_id == message_id, MESSAGES.c.conversation_id.is_not(None))
        .limit(1)
    ).scalar()
    return int(found) if found is not None else None


def is_automatic(headers: Sequence[tuple[str, str]], identity: Identity) -> bool:
    """Mail a machine sent (our auto-replies and notifications, an agent's away notice)."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == "auto-submitted" and value.strip().lower() not in ("", "no"):
            return True
        if lowered == identity.loop_header.lower():
            return True
    return False


def thread_reply(conn: Connection, scope: str, message_id: str | None, conversation: int) -> None:
    """Remember the reply's Message-ID so that the customer's answer to it joins the thread."""
    if message_id:
        conn.execute(
            insert_ignoring(conn, REFS, ["scope", "ref"]),
            [{"scope": scope, "ref": message_id[:998], "conversation_id": conversation}],
        )


class SlaFolders:
    """Sweeps one mailbox's Sent and resolved folders and the resolved keyword."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        ledger: FolderLedger,
        mailbox: Mailbox,
        book: SlaBook,
        identity: Identity,
    ) -> None:
        self.db = db
        self.clock = clock
        self.mailbox = mailbox
        self.book = book
        self.identity = identity
        self.name = f"imap:{mailbox.name}"
        self.folders = FolderScan(db, clock, ledger, mailbox.name)
        self._sent: str | None = None
        self.responses = 0
        self.resolutions = 0

    def scope(self, rules: Rules) -> str:
        """The thread scope of this mailbox's conversations."""
        return "" if rules.conversations.merge_copies else self.mailbox.name

    def run(self, client: Any, folder_id: int, uidvalidity: int) -> bool:
        """One look; True when another folder was selected (the caller selects its own again).

        Called with the mailbox's first intake folder selected.
        """
        rules = self.book.rules()
        sla = rules.sla
        if not sla.enabled:
            return False
        if sla.resolved_keyword:
            self._keyword(client, sla.resolved_keyword, folder_id, uidvalidity)
        self.folders.selected = False
        sent = self._sent_folder(client, sla.sent_folder)
        for folder, action in ((sent, "response"), (sla.resolved_folder, "resolved")):
            if folder is None:
                continue
            try:
                self._sweep(client, folder, action, rules)
            except IMAPClientError as exc:
                if isinstance(exc, IMAPClientAbortError):
                    raise
                log.warning("%s/%s: SLA sweep: %s", self.name, folder, exc)
        return self.folders.selected

    def _sent_folder(self, client: Any, configured: str | None) -> str | None:
        if configured != "auto":
            return configured
        if self._sent is None:
            try:
                self._sent = client.find_special_folder(SENT) or ""
            except IMAPClientError as exc:
                if isinstance(exc, IMAPClientAbortError):
                    raise
                self._sent = ""
        return self._sent or None

    def _sweep(self, client: Any, folder: str, action: str, rules: Rules) -> None:
        """Record what the folder's new UIDs say: responses (Sent) or resolutions."""
        loop = self.identity.loop_header.upper()
        item = f"BODY.PEEK[HEADER.FIELDS ({_FIELDS} {loop})]".encode()

        def record(
            conn: Connection, response: dict[int, Any], folder_id: int, validity: int
        ) -> None:
            events = self._events(conn, response, action, rules, folder_id, validity)
            self.book.record(conn, events)

        self.folders.scan(client, folder, [item, b"INTERNALDATE"], FETCH_BATCH, record)

    def _events(
        self,
        conn: Connection,
        response: dict[int, Any],
        action: str,
        rules: Rules,
        folder_id: int,
        uidvalidity: int,
    ) -> list[NewEvent]:
        tags = TicketTags(rules.conversations.ticket_prefix)
        scope = self.scope(rules)
        now = self.clock.now()
        events: list[NewEvent] = []
        for uid, data in sorted(response.items()):
            head = header_of(data)
            parsed = parse_message(head + b"\r\n")
            if action == "response":
                if is_automatic(parsed.headers, self.identity):
                    continue
                refs = [*reversed(parsed.in_reply_to), *reversed(parsed.references)]
                conv = find_conversation(conn, scope, refs, parsed.subject, tags)
                if conv is None:
                    continue
                thread_reply(conn, scope, parsed.message_id, conv)
                at = response_time(parsed.date, data.get(b"INTERNALDATE"), now)
                key = f"response:{parsed.message_id or f'{folder_id}:{uidvalidity}:{uid}'}"
                events.append(NewEvent(key, conv, "response", at, "sent-folder"))
                self.responses += 1
            else:
                conv = conversation_of_message(conn, parsed.message_id)
                if conv is None:
                    continue
                key = f"resolved:folder:{folder_id}:{uidvalidity}:{uid}"
                events.append(NewEvent(key, conv, "resolved", now, "imap-folder"))
                self.resolutions += 1
        return events

    def _keyword(self, client: Any, keyword: str, folder_id: int, uidvalidity: int) -> None:
        """Resolve the conversations of messages an agent gave the resolved keyword.

        Only messages that arrived since the oldest unresolved conversation opened (a day's
        margin for INTERNALDATE) can resolve anything still open.
        """
        with self.db.reading() as conn:
            oldest = conn.execute(
                select(func.min(CLOCKS.c.opened_at)).where(CLOCKS.c.status != "resolved")
            ).scalar()
        if oldest is None:
            return
        since = (utc(oldest) - timedelta(days=1)).date()
        try:
            uids = client.search(["KEYWORD", keyword, "SINCE", since])
        except IMAPClientError as exc:
            if isinstance(exc, IMAPClientAbortError):
                raise
            log.debug("%s: keyword search refused: %s", self.name, exc)
            return
        if not uids:
            return
        now = self.clock.now()
        with self.db.transaction() as conn:
            rows = conn.execute(
                select(DELIVERIES.c.message_pk, MESSAGES.c.conversation_id)
                .join(MESSAGES, MESSAGES.c.id == DELIVERIES.c.message_pk)
                .where(
                    and_(
                        DELIVERIES.c.folder_id == folder_id,
                        DELIVERIES.c.uidvalidity == uidvalidity,
                        DELIVERIES.c.uid.in_(sorted(uids)[-5000:]),
                        MESSAGES.c.conversation_id.is_not(None),
                    )
                )
            ).all()
            events = [
                NewEvent(f"resolved:keyword:{pk}", int(conv), "resolved", now, "imap-keyword", pk)
                for pk, conv in rows
            ]
            self.resolutions += len(self.book.record(conn, events))
