"""The screen step: recognise automated mail, record bounces, suppress dead addresses.

Hard bounces suppress an address at once (scope `all`). Soft bounces (a failed recipient
that is not hard, not a delay and not a sender-side refusal such as 5.7.x policy or spam
blocks, which say nothing about the mailbox) are counted per address; `soft_limit` of them
within `soft_window` suppress it (`all`, reason soft-bounce). A message from the address, or
a DSN reporting it delivered or relayed, shows the mailbox is alive and clears its count.
A complaint about campaign mail stops campaigns (`marketing`); any other stops everything.
"""

from __future__ import annotations

import email.message
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, bindparam, delete, select, update

from .automated import FailedRecipient, Verdict, detect
from .bounces import report_parts
from .inbox import insert_ignoring
from .marketing_config import Bounces
from .message import ParsedMessage
from .pipeline import Work, register
from .suppressions import suppress
from .tables import Bounce as BounceRow
from .tables import CampaignSend, SoftBounce

if TYPE_CHECKING:
    from .rules import Rules

log = logging.getLogger(__name__)

BOUNCES: Table = BounceRow.__table__  # type: ignore[assignment]
SOFT_BOUNCES: Table = SoftBounce.__table__  # type: ignore[assignment]
CAMPAIGN_SENDS: Table = CampaignSend.__table__  # type: ignore[assignment]

# reasons that describe our message or our sending (content, reputation, authentication,
# rate), not the recipient's mailbox: they never count towards a soft-bounce suppression
SENDER_SIDE = frozenset(
    {
        "authfailure", "blocked", "contenterror", "filtered", "norelaying", "policy",
        "ratelimited", "rejected", "spam", "toobig", "virus",
    }
)  # fmt: skip
_NOT_FAILED = frozenset({"delivered", "relayed", "expanded", "deliverable", "delayed"})
_ALIVE_ACTIONS = frozenset({"delivered", "relayed"})
_ORIGINAL_TYPES = frozenset({"message/rfc822", "message/global"})
_HEADER_TYPES = frozenset({"text/rfc822-headers", "message/rfc822-headers"})
_LIST_HEADER = re.compile(r"^(?:list-unsubscribe|list-id)[ \t]*:", re.I | re.M)


@dataclass(frozen=True)
class Identity:
    """What the screen needs to know about us: our addresses and our loop token."""

    addresses: frozenset[str]
    domains: frozenset[str]
    loop_token: str
    loop_header: str

    def is_ours(self, address: str | None) -> bool:
        """An address that belongs to this installation (plus-tags ignored)."""
        if not address or "@" not in address:
            return False
        local, _, domain = address.strip().lower().rpartition("@")
        base = local.split("+", 1)[0] + "@" + domain
        return base in self.addresses or domain in self.domains


def counts_as_soft(recipient: FailedRecipient) -> bool:
    """A failed recipient that says its mailbox may be in trouble, without being dead."""
    status = (recipient.status or "").split(".")
    return (
        bool(recipient.address)
        and not recipient.hard
        and recipient.action not in _NOT_FAILED
        and status[1:2] != ["7"]  # X.7.x: security or policy, a refusal of us
        and recipient.reason not in SENDER_SIDE
    )


def about_list_mail(message: ParsedMessage) -> bool:
    """Whether a complaint's returned original carries List-Unsubscribe or List-Id."""
    for ctype, node in report_parts(message.tree):
        if ctype in _ORIGINAL_TYPES:
            children = node.get_payload()
            if isinstance(children, list) and children:
                original = children[0]
                if isinstance(original, email.message.Message) and (
                    "list-unsubscribe" in original or "list-id" in original
                ):
                    return True
        elif ctype in _HEADER_TYPES:
            data = node.get_payload(decode=True)
            if isinstance(data, bytes) and _LIST_HEADER.search(data.decode("utf-8", "replace")):
                return True
    return False


@dataclass(frozen=True, slots=True)
class _Sign:
    """A soft bounce (detail set) or a sign of life (detail None) for one address."""

    address: str
    at: datetime
    pk: int
    detail: str | None
    original_message_id: str | None = None


@register("screen")
class ScreenStep:
    """Detect bounces, complaints, auto-replies, lists and our own mail before anything answers."""

    name = "screen"
    description = (
        "recognise automated mail (bounce, ARF, auto-reply, list, our own); record bounces, "
        "count soft bounces, suppress dead and complaining addresses"
    )
    needs: tuple[str, ...] = ("identity", "rules")

    def __init__(self, identity: Identity, rules: Callable[[], Rules] | None = None) -> None:
        self.identity = identity
        self.rules = rules

    def prepare(self, item: Work) -> None:
        message = item.message()
        verdict = detect(
            message,
            envelope_from=item.envelope_from,
            own_addresses=self.identity.addresses,
            loop_token=self.identity.loop_token,
            loop_header=self.identity.loop_header,
        )
        item.facts["verdict"] = verdict
        if verdict.feedback is not None:
            item.facts["complaint_about_list_mail"] = about_list_mail(message)

    def _limits(self) -> Bounces:
        return self.rules().marketing.bounces if self.rules is not None else Bounces()

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        bounces: list[dict[str, object]] = []
        suppressions: list[tuple[str, str, str | None, int | None]] = []
        signs: list[_Sign] = []
        complaints: list[Work] = []
        for item in items:
            verdict: Verdict = item.facts["verdict"]
            item.record.update(automated=verdict.kind, automated_reason=verdict.reason[:2000])
            # signs of life are the mailbox writing to us or a DSN saying delivered/relayed;
            # never the relay's 250 for a campaign send: with a smarthost that 250 always
            # comes before the asynchronous bounce, so it would wipe every count
            if verdict.kind == "human":
                sender = item.message().sender
                if sender is not None and "@" in sender.addr:
                    signs.append(
                        _Sign(sender.addr.strip().lower(), item.received_at, item.pk, None)
                    )
            if verdict.bounce is not None:
                report = verdict.bounce
                for position, rcpt in enumerate(report.recipients):
                    bounces.append(
                        {
                            "message_pk": item.pk,
                            "position": position,
                            "recipient": rcpt.address[:320] if rcpt.address else None,
                            "status": rcpt.status[:16] if rcpt.status else None,
                            "action": rcpt.action[:16] if rcpt.action else None,
                            "reason": rcpt.reason[:32],
                            "hard": rcpt.hard,
                            "diagnostic": rcpt.diagnostic,
                            "original_message_id": (report.original_message_id or "")[:998] or None,
                            "reported_at": item.received_at,
                        }
                    )
                    if not rcpt.address:
                        continue
                    address = rcpt.address.strip().lower()
                    if verdict.kind == "bounce" and rcpt.hard:
                        detail = f"{rcpt.status or ''} {rcpt.reason}: {rcpt.diagnostic or ''}"
                        suppressions.append((address, "hard-bounce", detail.strip(), item.pk))
                    elif verdict.kind == "bounce" and counts_as_soft(rcpt):
                        detail = f"{rcpt.status or ''} {rcpt.reason}: {rcpt.diagnostic or ''}"
                        signs.append(
                            _Sign(
                                address,
                                item.received_at,
                                item.pk,
                                detail.strip(),
                                (report.original_message_id or "")[:998] or None,
                            )
                        )
                    elif verdict.kind == "delivery-report" and rcpt.action in _ALIVE_ACTIONS:
                        signs.append(_Sign(address, item.received_at, item.pk, None))
            if verdict.feedback is not None and verdict.feedback.complainant:
                complaints.append(item)
        if bounces:
            conn.execute(insert_ignoring(conn, BOUNCES, ["message_pk", "position"]), bounces)
        when = max((item.received_at for item in items), default=None)
        if suppressions and when is not None:
            added = suppress(conn, suppressions, when)
            if added:
                log.info("%d addresses suppressed (hard bounces)", added)
        if signs:
            limits = self._limits()
            counted = _first_reports(conn, signs)
            _count_soft_bounces(conn, counted, limits.soft_limit, limits.soft_window)
        if complaints:
            _suppress_complaints(conn, complaints)


def _first_reports(conn: Connection, signs: list[_Sign]) -> list[_Sign]:
    """Drop soft bounces already counted: a second report of the same failed send."""
    keyed = [s for s in signs if s.detail is not None and s.original_message_id]
    if not keyed:
        return signs
    first: dict[tuple[str, str], int] = {}
    rows = conn.execute(
        select(
            BOUNCES.c.recipient,
            BOUNCES.c.original_message_id,
            BOUNCES.c.message_pk,
            BOUNCES.c.status,
            BOUNCES.c.action,
            BOUNCES.c.reason,
            BOUNCES.c.hard,
        ).where(
            BOUNCES.c.recipient.in_(sorted({s.address for s in keyed})),
            BOUNCES.c.original_message_id.in_(sorted({str(s.original_message_id) for s in keyed})),
        )
    )
    for row in rows:
        failed = FailedRecipient(row.recipient, row.status, row.action, None, row.reason, row.hard)
        if counts_as_soft(failed):
            key = (str(row.recipient).lower(), str(row.original_message_id))
            first[key] = min(first.get(key, row.message_pk), row.message_pk)
    return [
        s
        for s in signs
        if s.detail is None
        or not s.original_message_id
        or first.get((s.address, s.original_message_id), s.pk) == s.pk
    ]


def _count_soft_bounces(
    conn: Connection, signs: list[_Sign], limit: int, window_seconds: float
) -> None:
    """Apply soft bounces and signs of life in arrival order; suppress at the limit."""
    window = timedelta(seconds=window_seconds)
    bounced = {s.address: s for s in sorted(signs, key=lambda s: (s.at, s.pk)) if s.detail}
    if bounced:
        # a placeholder row for every new address, so that rows can be locked below
        conn.execute(
            insert_ignoring(conn, SOFT_BOUNCES, ["address"]),
            [
                {"address": a, "count": 0, "first_at": s.at, "last_at": s.at, "last_detail": None}
                for a, s in sorted(bounced.items())
            ],
        )
    addresses = sorted({s.address for s in signs})
    query = (
        select(SOFT_BOUNCES)
        .where(SOFT_BOUNCES.c.address.in_(addresses))
        .order_by(SOFT_BOUNCES.c.address)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    state: dict[str, dict[str, Any] | None] = {
        row.address: dict(row._mapping) for row in conn.execute(query)
    }
    if not state:
        return
    stored = set(state)
    suppressions: list[tuple[str, str, str | None, int | None]] = []
    for sign in sorted(signs, key=lambda s: (s.at, s.pk)):
        if sign.address not in state:
            continue
        row = state[sign.address]
        if sign.detail is None:
            state[sign.address] = None  # the mailbox is alive: start again from nothing
            continue
        if row is None or row["count"] == 0 or sign.at - row["first_at"] > window:
            row = {"address": sign.address, "count": 0, "first_at": sign.at, "last_at": sign.at}
        row["count"] += 1
        row["last_at"] = max(row["last_at"], sign.at)
        row["last_detail"] = sign.detail[:2000]
        state[sign.address] = row
        if row["count"] >= limit:
            note = f"{row['count']} soft bounces since {row['first_at']:%Y-%m-%d}: {sign.detail}"
            suppressions.append((sign.address, "soft-bounce", note, sign.pk))
            state[sign.address] = None
    gone = sorted(a for a, row in state.items() if row is None and a in stored)
    if gone:
        conn.execute(delete(SOFT_BOUNCES).where(SOFT_BOUNCES.c.address.in_(gone)))
    kept = [row for row in state.values() if row is not None]
    if kept:
        conn.execute(
            update(SOFT_BOUNCES)
            .where(SOFT_BOUNCES.c.address == bindparam("key"))
            .values(
                count=bindparam("count"),
                first_at=bindparam("first_at"),
                last_at=bindparam("last_at"),
                last_detail=bindparam("last_detail"),
            ),
            [{**row, "key": row["address"]} for row in kept],
        )
    if suppressions:
        when = max(s.at for s in signs)
        added = suppress(conn, suppressions, when)
        log.info("%d addresses suppressed after repeated soft bounces", added)


def _suppress_complaints(conn: Connection, items: list[Work]) -> None:
    """A complaint about campaign mail stops campaigns; any other stops everything."""
    unsure = {
        str(item.facts["verdict"].feedback.original_message_id)
        for item in items
        if not item.facts.get("complaint_about_list_mail")
        and item.facts["verdict"].feedback.original_message_id
    }
    ours: set[str] = set()
    if unsure:
        # campaign_sends keeps the Message-ID we sent, with or without the angle brackets
        wanted = sorted(unsure | {mid.strip("<>") for mid in unsure})
        found = conn.execute(
            select(CAMPAIGN_SENDS.c.message_id).where(CAMPAIGN_SENDS.c.message_id.in_(wanted))
        ).scalars()
        ours = {f"<{mid.strip('<>')}>" for mid in found}
    by_scope: dict[str, list[tuple[str, str, str | None, int | None]]] = {}
    for item in items:
        feedback = item.facts["verdict"].feedback
        campaign = bool(item.facts.get("complaint_about_list_mail")) or (
            f"<{(feedback.original_message_id or '').strip('<>')}>" in ours
        )
        entry = (
            str(feedback.complainant),
            "complaint",
            f"{feedback.format}: {feedback.feedback_type}",
        )
        by_scope.setdefault("marketing" if campaign else "all", []).append((*entry, item.pk))
    when = max(item.received_at for item in items)
    for scope, entries in sorted(by_scope.items()):
        added = suppress(conn, entries, when, scope=scope)
        if added:
            log.info("%d addresses suppressed after complaints (scope %s)", added, scope)
