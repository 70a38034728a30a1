"""Conversations: replies join their thread by Message-ID references or the ticket tag."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import Connection, Table, func, select, update

from .inbox import MESSAGES, insert_ignoring
from .pipeline import Work, register
from .rules import ConversationRules
from .tables import Conversation, ConversationRef

CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
REFS: Table = ConversationRef.__table__  # type: ignore[assignment]

_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|antw|tr|rif|r|回复|回覆|答复|转发|轉寄|转寄)\s*(?:\[\d+\])?\s*[:：]\s*)+",
    re.IGNORECASE,
)
MAX_REF = 998


class TicketTags:
    """Writes and finds the ticket tag, e.g. "[MC#1042]", in subjects."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pattern = re.compile(rf"\[{re.escape(prefix)}#(\d{{1,18}})\]", re.IGNORECASE)

    def tag(self, conversation_id: int) -> str:
        return f"[{self.prefix}#{conversation_id}]"

    def find(self, subject: str) -> int | None:
        match = self.pattern.search(subject or "")
        return int(match.group(1)) if match else None

    def strip(self, subject: str) -> str:
        return self.pattern.sub("", subject or "")


def base_subject(subject: str, tags: TicketTags) -> str:
    """The subject without reply/forward prefixes and ticket tags."""
    text = tags.strip(subject)
    previous = None
    while previous != text:
        previous = text
        text = _REPLY_PREFIX.sub("", text).strip()
    return " ".join(text.split())


@register("thread")
class ThreadStep:
    """Put each message into its conversation, opening a new one when it starts a thread."""

    name = "thread"
    description = "join the conversation by In-Reply-To/References or ticket tag, else open one"
    needs: tuple[str, ...] = ("conversation_rules",)

    def __init__(self, conversation_rules: ConversationRules) -> None:
        self.rules = conversation_rules
        self.tags = TicketTags(conversation_rules.ticket_prefix)

    def prepare(self, item: Work) -> None:
        parsed = item.message()
        own = [parsed.message_id] if parsed.message_id else []
        replied = list(reversed(parsed.in_reply_to)) + list(reversed(parsed.references))
        item.facts["thread_refs"] = [r[:MAX_REF] for r in dict.fromkeys(own + replied)]
        item.facts["thread_tag"] = self.tags.find(parsed.subject) if self.rules.thread_by_tag else None

    def apply(self, item: Work, conn: Connection) -> None:
        scope = "" if self.rules.merge_copies else (item.mailbox or "")
        refs: list[str] = item.facts["thread_refs"]
        conversation = self._find(conn, scope, refs, item.facts["thread_tag"])
        when = item.received_at
        created = conversation is None
        if conversation is None:
            conversation = conn.execute(
                CONVERSATIONS.insert().values(
                    subject=base_subject(item.message().subject, self.tags)[:2000],
                    mailbox=item.mailbox,
                    status="open",
                    opened_at=when,
                    last_message_at=when,
                    message_count=1,
                )
            ).inserted_primary_key[0]
        else:
            conn.execute(
                update(CONVERSATIONS)
                .where(CONVERSATIONS.c.id == conversation)
                .values(
                    message_count=CONVERSATIONS.c.message_count + 1,
                    last_message_at=func.max(CONVERSATIONS.c.last_message_at, when)
                    if conn.dialect.name == "sqlite"
                    else func.greatest(CONVERSATIONS.c.last_message_at, when),
                )
            )
        if refs:
            conn.execute(
                insert_ignoring(conn, REFS, ["scope", "ref"]),
                [{"scope": scope, "ref": ref, "conversation_id": conversation} for ref in refs],
            )
        conn.execute(
            update(MESSAGES).where(MESSAGES.c.id == item.pk).values(conversation_id=conversation)
        )
        item.facts["conversation_id"] = conversation
        item.facts["conversation_new"] = created

    def _find(self, conn: Connection, scope: str, refs: Sequence[str], tag: int | None) -> int | None:
        if refs:
            rows = dict(
                conn.execute(
                    select(REFS.c.ref, REFS.c.conversation_id).where(
                        REFS.c.scope == scope, REFS.c.ref.in_(list(refs))
                    )
                ).all()
            )
            for ref in refs:
                if ref in rows:
                    return int(rows[ref])
        if tag is not None:
            found = conn.execute(
                select(CONVERSATIONS.c.id).where(CONVERSATIONS.c.id == tag)
            ).scalar_one_or_none()
            if found is not None:
                return int(found)
        return None
