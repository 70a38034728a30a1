"""Conversations: replies join their thread by Message-ID references or the ticket tag."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import Connection, Table, bindparam, select, text, update

from .database import later
from .inbox import insert_ignoring
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
THREAD_LOCK = 0x6D61696C63617265  # "mailcare": one advisory lock for threading on PostgreSQL


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
        item.facts["thread_tag"] = (
            self.tags.find(parsed.subject) if self.rules.thread_by_tag else None
        )

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            # runners in other processes thread their batches one after the other, so two
            # related messages processed at the same moment cannot open two conversations
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": THREAD_LOCK})
        scopes = {item.pk: self._scope(item) for item in items}
        known = self._known_refs(conn, items, scopes)
        tagged = self._existing(conn, {item.facts["thread_tag"] for item in items} - {None})
        # conversations opened by this batch get a placeholder (a negative number) first
        opened: list[dict[str, object]] = []
        touched: dict[int, list[Work]] = {}
        new_refs: list[tuple[str, str, int]] = []
        for item in items:
            scope = scopes[item.pk]
            refs: list[str] = item.facts["thread_refs"]
            conversation = next((known[(scope, r)] for r in refs if (scope, r) in known), None)
            tag = item.facts["thread_tag"]
            if conversation is None and tag in tagged:
                conversation = tag
            item.facts["conversation_new"] = conversation is None
            if conversation is None:
                opened.append(
                    {
                        "subject": base_subject(item.message().subject, self.tags)[:2000],
                        "mailbox": item.mailbox,
                        "status": "open",
                        "opened_at": item.received_at,
                        "last_message_at": item.received_at,
                        "message_count": 0,
                    }
                )
                conversation = -len(opened)
            touched.setdefault(conversation, []).append(item)
            for ref in refs:
                if (scope, ref) not in known:
                    known[(scope, ref)] = conversation
                    new_refs.append((scope, ref, conversation))
        real = self._open(conn, opened)
        if new_refs:
            conn.execute(
                insert_ignoring(conn, REFS, ["scope", "ref"]),
                [
                    {"scope": scope, "ref": ref, "conversation_id": real.get(conv, conv)}
                    for scope, ref, conv in new_refs
                ],
            )
        conn.execute(
            update(CONVERSATIONS)
            .where(CONVERSATIONS.c.id == bindparam("c_id"))
            .values(
                message_count=CONVERSATIONS.c.message_count + bindparam("c_count"),
                last_message_at=later(conn, CONVERSATIONS.c.last_message_at, bindparam("c_last")),
            ),
            [
                {
                    "c_id": real.get(conv, conv),
                    "c_count": len(group),
                    "c_last": max(i.received_at for i in group),
                }
                for conv, group in touched.items()
            ],
        )
        for conv, group in touched.items():
            final = real.get(conv, conv)
            for item in group:
                item.facts["conversation_id"] = item.record["conversation_id"] = final

    def _scope(self, item: Work) -> str:
        return "" if self.rules.merge_copies else (item.mailbox or "")

    def _known_refs(
        self, conn: Connection, items: Sequence[Work], scopes: dict[int, str]
    ) -> dict[tuple[str, str], int]:
        wanted: dict[str, set[str]] = {}
        for item in items:
            wanted.setdefault(scopes[item.pk], set()).update(item.facts["thread_refs"])
        known: dict[tuple[str, str], int] = {}
        for scope, refs in wanted.items():
            ordered = sorted(refs)
            for start in range(0, len(ordered), 500):
                rows = conn.execute(
                    select(REFS.c.ref, REFS.c.conversation_id).where(
                        REFS.c.scope == scope, REFS.c.ref.in_(ordered[start : start + 500])
                    )
                )
                known.update({(scope, ref): int(conv) for ref, conv in rows})
        return known

    def _existing(self, conn: Connection, ids: set[int]) -> set[int]:
        if not ids:
            return set()
        rows = conn.execute(select(CONVERSATIONS.c.id).where(CONVERSATIONS.c.id.in_(sorted(ids))))
        return {int(conv) for (conv,) in rows}

    def _open(self, conn: Connection, rows: list[dict[str, object]]) -> dict[int, int]:
        """Insert new conversations; map each placeholder to its real id."""
        if not rows:
            return {}
        result = conn.execute(
            CONVERSATIONS.insert().returning(CONVERSATIONS.c.id, sort_by_parameter_order=True),
            rows,
        )
        return {-(index + 1): int(conv) for index, (conv,) in enumerate(result)}
