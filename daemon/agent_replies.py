"""Agents' replies handed to the submission port: recorded as responses, then relayed.

One durable transaction queues the message in the outbox (the sender relays it) and
records the response on its conversation's SLA clock, so the client's 250 means both
happened. A client that sends the same bytes again after a lost 250 changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from sqlalchemy import select

from .compose import bare_id
from .database import Database
from .interfaces import Clock
from .message import parse_message
from .outbox import Outbox, OutgoingMail
from .screening import Identity
from .sla import CONVERSATIONS, NewEvent, SlaBook
from .sla_imap import find_conversation, is_automatic, thread_reply
from .threads import TicketTags

log = logging.getLogger(__name__)


class Submission(Protocol):
    """What the submission port received (daemon.submission.Submitted)."""

    @property
    def mail_from(self) -> str: ...
    @property
    def recipients(self) -> tuple[str, ...]: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def username(self) -> str: ...


class AgentReplies:
    """The submission port's `accept`: queue for relaying and record the response."""

    def __init__(
        self, db: Database, clock: Clock, outbox: Outbox, book: SlaBook, identity: Identity
    ) -> None:
        self.db = db
        self.clock = clock
        self.outbox = outbox
        self.book = book
        self.identity = identity
        self.recorded = 0

    def accept(self, submitted: Submission) -> None:
        """Durably queue the message and record it as a response; raises on failure."""
        raw = submitted.raw
        digest = hashlib.sha256(raw).hexdigest()
        parsed = parse_message(raw)
        mid = parsed.message_id
        if not mid:  # every relayed message needs an id; derive one from its bytes
            mid = f"{digest[:32]}@submission.mailcare.invalid"
            raw = f"Message-ID: <{mid}>\r\n".encode("ascii") + raw
        rules = self.book.rules()
        tags = TicketTags(rules.conversations.ticket_prefix)
        refs = [*reversed(parsed.in_reply_to), *reversed(parsed.references)]
        with self.db.transaction(durable=True) as conn:
            self.outbox.enqueue(
                conn,
                [
                    OutgoingMail(
                        key=f"agent:{digest}",
                        kind="agent",
                        message_id=bare_id(mid),
                        mail_from=submitted.mail_from,
                        recipients=tuple(submitted.recipients),
                        raw=raw,
                    )
                ],
            )
            conversation = None
            if rules.sla.enabled and not is_automatic(parsed.headers, self.identity):
                conversation = find_conversation(conn, None, refs, parsed.subject, tags)
            if conversation is not None:
                scope = ""
                if not rules.conversations.merge_copies:
                    scope = (
                        conn.execute(
                            select(CONVERSATIONS.c.mailbox).where(
                                CONVERSATIONS.c.id == conversation
                            )
                        ).scalar()
                        or ""
                    )
                thread_reply(conn, scope, mid, conversation)
                event = NewEvent(
                    f"response:{mid}",
                    conversation,
                    "response",
                    self.clock.now(),
                    "submission",
                    detail=f"by {submitted.username}"[:200],
                )
                self.recorded += len(self.book.record(conn, [event]))
        self.outbox.notify()
        log.info(
            "%s: submitted by %s for %d recipient(s)%s",
            mid,
            submitted.username,
            len(submitted.recipients),
            f", a response in conversation {conversation}" if conversation else "",
        )
