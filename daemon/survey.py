"""Satisfaction surveys: a mail with 1–5 rating links after a conversation is resolved.

Each link carries an HMAC-signed token naming the conversation, the rating and the day the
survey was sent. With the web endpoint (`http.public_url`) the links open a confirmation
page whose button records the rating; without it they are `mailto:` links to the support
address: the customer's mail client sends the answer, and the pipeline's `sla` step
recognises the token (in the subject or the body), checks its signature and age, and
records the rating. A forged or expired token is an ordinary message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Table, select

from .compose import automatic, mailbox, split_mailbox
from .inbox import MESSAGES, insert_updating
from .outbox import Outbox, OutgoingMail
from .render import TemplateStore
from .rules import Rules
from .screening import Identity
from .sla import CONTACTS, CONVERSATIONS, Resolution
from .suppressions import suppressed
from .tables import SurveyAnswer
from .threads import TicketTags

log = logging.getLogger(__name__)

ANSWERS: Table = SurveyAnswer.__table__  # type: ignore[assignment]
_TOKEN = re.compile(r"\bmcs-(\d{1,18})-([1-5])-(\d{1,6})-([a-z2-7]{16})\b")
_DAY = 86400
LABELS = {
    "en": ("very poor", "poor", "fair", "good", "excellent"),
    "zh": ("非常不满意", "不满意", "一般", "满意", "非常满意"),
}


@dataclass(frozen=True, slots=True)
class Rating:
    """A verified survey answer."""

    conversation_id: int
    rating: int


def _signature(key: bytes, conversation_id: int, rating: int, day: int) -> str:
    digest = hmac.new(key, f"survey:{conversation_id}:{rating}:{day}".encode(), hashlib.sha256)
    return base64.b32encode(digest.digest()[:10]).decode("ascii").lower()


def token(key: bytes, conversation_id: int, rating: int, sent: datetime) -> str:
    """The signed token of one rating link."""
    day = int(sent.timestamp()) // _DAY
    return f"mcs-{conversation_id}-{rating}-{day}-{_signature(key, conversation_id, rating, day)}"


def find_rating(key: bytes, text: str, now: datetime, valid_for: float) -> Rating | None:
    """The first valid token in text (signature right, not older than valid_for seconds)."""
    today = int(now.timestamp()) // _DAY
    for match in _TOKEN.finditer(text):
        conversation_id, rating, day = (int(match.group(n)) for n in (1, 2, 3))
        expected = _signature(key, conversation_id, rating, day)
        if not hmac.compare_digest(expected, match.group(4)):
            continue
        if day > today or (today - day) * _DAY > valid_for + _DAY:
            continue
        return Rating(conversation_id, rating)
    return None


def record_rating(
    conn: Connection, rating: Rating, at: datetime, message_pk: int | None, channel: str
) -> None:
    """Store the rating; a later answer to the same survey replaces an earlier one."""
    values = {
        "conversation_id": rating.conversation_id,
        "rating": rating.rating,
        "answered_at": at,
        "message_pk": message_pk,
        "channel": channel,
    }
    columns = ("rating", "answered_at", "message_pk", "channel")
    conn.execute(insert_updating(conn, ANSWERS, ["conversation_id"], columns), [values])


class Surveys:
    """Queues the survey mail when a conversation becomes resolved (one per conversation)."""

    def __init__(
        self,
        templates: TemplateStore,
        outbox: Outbox,
        identity: Identity,
        key: bytes,
        mid_key: bytes,
        public_url: str | None = None,
    ) -> None:
        self.public_url = public_url.rstrip("/") if public_url else None
        self.templates = templates
        self.outbox = outbox
        self.identity = identity
        self.key = key
        self.mid_key = mid_key

    def after_resolution(
        self, conn: Connection, resolved: Sequence[Resolution], rules: Rules
    ) -> None:
        """The SlaBook hook: queue a survey for each resolved conversation with a customer."""
        if not rules.sla.survey.enabled:
            return
        ids = [r.conversation_id for r in resolved]
        rows = conn.execute(
            select(
                CONVERSATIONS.c.id,
                CONVERSATIONS.c.subject,
                CONTACTS.c.address,
                CONTACTS.c.name,
            )
            .select_from(CONVERSATIONS.join(CONTACTS))
            .where(CONVERSATIONS.c.id.in_(ids))
        ).all()
        blocked = suppressed(conn, [row.address for row in rows])
        language = self._languages(conn, ids)
        by_id = {r.conversation_id: r for r in resolved}
        mails: list[OutgoingMail] = []
        for row in rows:
            if row.address in blocked or self.identity.is_ours(row.address):
                continue
            try:
                mails.append(self.compose(rules, row, by_id[row.id], language.get(row.id)))
            except Exception as exc:  # a broken template must not undo the resolution
                log.error("survey for conversation %s not sent: %s", row.id, exc)
        if mails:
            self.outbox.enqueue(conn, mails)

    def _languages(self, conn: Connection, ids: Sequence[int]) -> dict[int, str | None]:
        found: dict[int, str | None] = {}
        for conv, language in conn.execute(
            select(MESSAGES.c.conversation_id, MESSAGES.c.language)
            .where(MESSAGES.c.conversation_id.in_(list(ids)), MESSAGES.c.automated == "human")
            .order_by(MESSAGES.c.id)
        ):
            found.setdefault(int(conv), language)
        return found

    def compose(
        self, rules: Rules, row: Any, resolution: Resolution, language: str | None
    ) -> OutgoingMail:
        """The survey mail for one conversation."""
        survey = rules.sla.survey
        conv, address = int(row.id), str(row.address)
        sender = split_mailbox(survey.sender)[1]  # the rating links go to this address
        tag = TicketTags(rules.conversations.ticket_prefix).tag(conv)
        lang = (language or "en").split("-")[0].lower()
        labels = LABELS.get(lang, LABELS["en"])
        now = resolution.resolved_at.astimezone(UTC)
        ratings = []
        for value in range(1, 6):
            signed = token(self.key, conv, value, now)
            subject = f"{tag} rating {value} {signed}"
            ratings.append(
                {
                    "value": value,
                    "label": labels[value - 1],
                    "token": signed,
                    "url": (
                        f"{self.public_url}/survey/{signed}"
                        if self.public_url
                        else f"mailto:{sender}?subject={quote(subject)}"
                    ),
                }
            )
        context = {
            "ticket": tag,
            "subject": row.subject or "",
            "customer": {"name": row.name, "address": address},
            "ratings": ratings,
            "company": {
                "name": rules.identity.company.name,
                "signature": rules.identity.company.signature,
            },
        }
        rendered = self.templates.render(
            "surveys",
            survey.template,
            context,
            department=resolution.department,
            urgency=resolution.urgency,
            language=language,
        )
        return automatic(
            f"survey:{conv}",
            "survey",
            survey.sender,
            (mailbox(row.name, address), address),
            rendered,
            self.mid_key,
            (self.identity.loop_header, self.identity.loop_token),
            now,
            conv,
        )
