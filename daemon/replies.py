"""The reply step: decide whether a message gets an auto-reply, render it, queue it once.

Never a reply to a machine (the screen step's verdict), to ourselves, to a suppressed
address, to mail we were only Bcc'd on, or beyond the per-recipient rate limits; one
reply per (message, rule) through the outbox key, even when the batch is redone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, tuple_, update

from .automated import Verdict
from .calendar import BusinessCalendar, describe
from .compose import Outgoing, mailbox, message_id, split_mailbox, valid_address
from .contacts import tiers_of
from .errors import ConfigError, MailcareError
from .faq import FaqIndex
from .inbox import insert_ignoring
from .interfaces import Clock
from .outbox import Outbox, OutgoingMail
from .pipeline import Work, register
from .render import Rendered, TemplateStore
from .rules import ReplyRule, Rules, RulesFile
from .screening import Identity
from .suppressions import suppressed
from .tables import FaqOffer, ReplyLimit
from .threads import TicketTags

log = logging.getLogger(__name__)

LIMITS: Table = ReplyLimit.__table__  # type: ignore[assignment]
OFFERS: Table = FaqOffer.__table__  # type: ignore[assignment]
_LOOSE_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"'@]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAQ_TEXT = 2000
# stand-ins for the ticket while a reply is rendered before the ticket number is known
TICKET = "\ue000ticket\ue001"
TICKET_ID = "\ue000ticket-id\ue001"
DEFAULT_TIERS = (None, "ordinary")


def early_rules_changed(item: Work, decision: Decision) -> bool:
    """The rule chosen at commit time differs from the one the draft was rendered for."""
    early = item.facts.get("draft_rule")
    return early is not None and early is not decision.rule


@dataclass
class Decision:
    """Why a message is (or is not) answered; stored with the message."""

    rule: ReplyRule | None
    recipient: str | None
    reason: str
    faq: list[Any] = field(default_factory=list)

    @property
    def replies(self) -> bool:
        return self.rule is not None and self.recipient is not None


def reply_recipient(item: Work) -> str | None:
    """Where a reply goes: the first usable Reply-To, else From (also when malformed)."""
    message = item.message()
    for candidate in [*message.reply_to, message.sender]:
        if candidate is None:
            continue
        address = candidate.addr.strip().lower()
        if valid_address(address):
            return address
        # "From: Big Bug bb@bug.example" (no brackets): find the address in the text
        for text in (candidate.addr, candidate.name or ""):
            found = _LOOSE_ADDRESS.search(text)
            if found and valid_address(found.group(0).lower()):
                return found.group(0).lower()
    return None


def matching_rule(
    rules: Rules, item: Work, tier: str | None, follow_ups: bool = False
) -> ReplyRule | None:
    """The first auto-reply rule whose conditions all hold (follow_ups: ignoring that one)."""
    message = item.message()
    addressed = {a.addr.strip().lower() for a in [*message.to, *message.cc]}
    for rule in rules.auto_replies.rules:
        when = rule.when
        if when.new_conversation and not follow_ups and item.facts.get("conversation_new") is False:
            continue
        if when.mailboxes is not None and item.mailbox not in when.mailboxes:
            continue
        if when.to is not None and not addressed.intersection(a.lower() for a in when.to):
            continue
        if when.departments is not None and item.facts.get("department") not in when.departments:
            continue
        if when.urgencies is not None and item.facts.get("urgency") not in when.urgencies:
            continue
        if when.languages is not None and message.language not in when.languages:
            continue
        if when.tiers is not None and (tier or "ordinary") not in when.tiers:
            continue
        return rule
    return None


class RateLimiter:
    """Per-recipient limits kept in reply_limits rows, locked in a stable order."""

    def __init__(self, conn: Connection, now: datetime, rules: Rules) -> None:
        self.conn = conn
        self.now = now
        limits = rules.auto_replies.limits
        self.windows = {
            "*hour": (3600.0, limits.max_per_hour),
            "*day": (86400.0, limits.max_per_day),
        }
        self.rule_window = limits.per_rule_window
        self.state: dict[tuple[str, str], list[Any]] = {}
        self.dirty: set[tuple[str, str]] = set()

    def load(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Create and lock the rows of every (recipient, rule) pair this batch may touch."""
        keys = sorted(
            {(r, b) for recipient, rule in pairs for r, b in self._buckets(recipient, rule)}
        )
        if not keys:
            return
        self.conn.execute(
            insert_ignoring(self.conn, LIMITS, ["recipient", "rule"]),
            [
                {
                    "recipient": r,
                    "rule": b,
                    "last_at": EPOCH,
                    "window_start": EPOCH,
                    "window_count": 0,
                }
                for r, b in keys
            ],
        )
        for start in range(0, len(keys), 300):
            chunk = keys[start : start + 300]
            query = (
                select(LIMITS)
                .where(tuple_(LIMITS.c.recipient, LIMITS.c.rule).in_(chunk))
                .order_by(LIMITS.c.recipient, LIMITS.c.rule)
            )
            if self.conn.dialect.name == "postgresql":
                query = query.with_for_update()
            for row in self.conn.execute(query):
                self.state[(row.recipient, row.rule)] = [
                    row.last_at,
                    row.window_start,
                    row.window_count,
                ]

    @staticmethod
    def _buckets(recipient: str, rule: str) -> list[tuple[str, str]]:
        return [(recipient, rule), (recipient, "*hour"), (recipient, "*day")]

    def allow(self, recipient: str, rule: str) -> str | None:
        """None when a reply may go (and count it); else the limit that stops it."""
        windows = {rule: (self.rule_window, 1), **self.windows}
        for bucket, (seconds, ceiling) in windows.items():
            _, start, count = self.state[(recipient, bucket)]
            if self.now - start < timedelta(seconds=seconds) and count >= ceiling:
                if bucket == rule:
                    return (
                        f"rate limit: already answered by rule {rule} within {seconds / 3600:g} h"
                    )
                return (
                    f"rate limit: {ceiling} auto-replies per {seconds / 3600:g} h to this address"
                )
        for bucket, (seconds, _) in windows.items():
            key = (recipient, bucket)
            _, start, count = self.state[key]
            if self.now - start >= timedelta(seconds=seconds):
                start, count = self.now, 0
            self.state[key] = [self.now, start, count + 1]
            self.dirty.add(key)
        return None

    def save(self) -> None:
        """Write the counters this batch changed."""
        if not self.dirty:
            return
        self.conn.execute(
            update(LIMITS)
            .where(LIMITS.c.recipient == bindparam("k_r"), LIMITS.c.rule == bindparam("k_b"))
            .values(
                last_at=bindparam("v_last"),
                window_start=bindparam("v_start"),
                window_count=bindparam("v_count"),
            ),
            [
                {"k_r": r, "k_b": b, "v_last": s[0], "v_start": s[1], "v_count": s[2]}
                for (r, b), s in ((key, self.state[key]) for key in sorted(self.dirty))
            ],
        )


@register("reply")
class ReplyStep:
    """Send the matching auto-reply rule's template to the customer, at most once."""

    name = "reply"
    description = "auto-reply from templates, with FAQ answers, loop guard and rate limits"
    needs: tuple[str, ...] = ("replier",)

    def __init__(self, replier: Replier) -> None:
        self.replier = replier

    def prepare(self, item: Work) -> None:
        self.replier.prepare(item)

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        self.replier.apply(items, conn)


class Replier:
    """Everything the reply step works with; also answers `mailcare inspect`."""

    def __init__(
        self,
        rules: RulesFile,
        templates: TemplateStore,
        faq: FaqIndex | None,
        identity: Identity,
        outbox: Outbox | None,
        key: bytes,
        clock: Clock,
        calendars: dict[str, BusinessCalendar] | None = None,
    ) -> None:
        self.clock = clock
        self.rules = rules
        self.templates = templates
        self.faq = faq
        self.identity = identity
        self.outbox = outbox
        self.key = key
        self.calendars = calendars or {}

    def refresh(self) -> None:
        """Pick up edited rules, templates and FAQ entries (a broken rules file is ignored)."""
        if self.rules.refresh():
            self.calendars = {
                name: BusinessCalendar.from_config(config)
                for name, config in self.rules.current.calendars.items()
            }
        if self.templates.changed():
            self.templates.reload()
        if self.faq is not None and self.faq.changed():
            try:
                self.faq = FaqIndex.load(self.faq.directory)
            except ConfigError as exc:
                log.error("FAQ entries not reloaded, keeping the last good ones: %s", exc)

    def screen(self, item: Work, tier: str | None = None) -> Decision:
        """The decision that needs no database: rule, recipient, loop guard, Bcc."""
        rules = self.rules.current
        if not rules.auto_replies.enabled:
            return Decision(None, None, "auto-replies are disabled in rules.yaml")
        verdict: Verdict | None = item.facts.get("verdict")
        if verdict is not None and verdict.automated:
            return Decision(None, None, f"automated mail ({verdict.kind}): {verdict.reason}")
        if item.facts.get("survey_answer") is not None:
            return Decision(None, None, "a satisfaction survey answer")
        if item.facts.get("no_reply"):  # e.g. an unsubscribe request, already carried out
            return Decision(None, None, str(item.facts["no_reply"]))
        rule = matching_rule(rules, item, tier)
        if rule is None:
            if item.facts.get("conversation_new") is False and matching_rule(
                rules, item, tier, follow_ups=True
            ):
                return Decision(
                    None, None, "a follow-up in an open conversation: rules answer new requests"
                )
            return Decision(None, None, "no auto-reply rule matches")
        recipient = reply_recipient(item)
        if recipient is None or not valid_address(recipient):
            return Decision(rule, None, "no usable sender address to answer")
        if self.identity.is_ours(recipient):
            return Decision(rule, None, f"the sender {recipient} is one of our own addresses")
        message = item.message()
        addressed = [a.addr for a in [*message.to, *message.cc]]
        if not any(self.identity.is_ours(a) for a in addressed):
            return Decision(rule, None, "none of our addresses is in To or Cc (only Bcc'd)")
        return Decision(rule, recipient, f"rule {rule.name}")

    def prepare(self, item: Work) -> None:
        decision = self.screen(item)
        if decision.replies:
            self._offer_faq(item, decision)
            # render now, outside the database's write lock; the ticket is filled in later
            item.facts["draft"] = self._draft(item, decision, None, self.clock.now(), True)
            item.facts["draft_rule"] = decision.rule
            item.facts["draft_for"] = (item.facts.get("department"), item.facts.get("urgency"))
        item.facts["decision"] = decision

    def _draft(
        self, item: Work, decision: Decision, tier: str | None, now: datetime, early: bool
    ) -> Rendered | str:
        """The rendered template, or why it could not be rendered."""
        assert decision.rule is not None
        context = self.context(item, decision, tier, now)
        if early:
            context["ticket"], context["ticket_id"] = TICKET, TICKET_ID
        try:
            return self.templates.render(
                "replies",
                decision.rule.template,
                context,
                department=context["department"],
                urgency=context["urgency"],
                language=item.message().language,
            )
        except MailcareError as exc:
            log.error("%s: reply template: %s", item.message().message_id or item.pk, exc)
            return f"not sent: template error: {exc}"

    def _offer_faq(self, item: Work, decision: Decision) -> None:
        if self.faq is None or decision.rule is None or not decision.rule.faq.limit:
            return
        choice = decision.rule.faq
        message = item.message()
        decision.faq = self.faq.match(
            f"{message.subject}\n{message.text[:FAQ_TEXT]}",
            language=message.language,
            department=item.facts.get("department"),
            limit=choice.limit,
            min_score=choice.min_score,
        )

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        now = self.clock.now()
        tiers = tiers_of(conn, items)
        for item in items:
            # decide again: the conversation (new or not) and the tier are known only now
            early: Decision = item.facts["decision"]
            decision = self.screen(item, tiers.get(int(item.facts.get("contact_id") or 0)))
            if decision.rule is early.rule:
                decision.faq = early.faq
            elif decision.replies:
                self._offer_faq(item, decision)
            item.facts["decision"] = decision
        candidates = [item for item in items if item.facts["decision"].replies]
        blocked = suppressed(conn, [item.facts["decision"].recipient for item in candidates])
        limiter = RateLimiter(conn, now, self.rules.current)
        limiter.load(
            [(i.facts["decision"].recipient, i.facts["decision"].rule.name) for i in candidates]
        )
        mails: list[OutgoingMail] = []
        offers: list[dict[str, Any]] = []
        for item in items:
            chosen: Decision = item.facts["decision"]
            draft = self._checked(item, chosen, tiers, blocked, limiter, now)
            if draft is not None and chosen.rule is not None:
                mails.append(self.compose(item, chosen, draft, now))
                chosen.reason = f"auto-reply by rule {chosen.rule.name}"
                offers.extend(
                    {
                        "message_pk": item.pk,
                        "entry": match.entry.id[:128],
                        "department": item.facts.get("department"),
                        "language": item.message().language,
                        "score": round(float(match.score), 4),
                        "offered_at": item.received_at,
                    }
                    for match in chosen.faq
                )
            item.record["reply_decision"] = chosen.reason[:2000]
        limiter.save()
        if mails:
            if self.outbox is None:
                raise RuntimeError("this replier has no outbox")
            self.outbox.enqueue(conn, mails)
        if offers:
            conn.execute(insert_ignoring(conn, OFFERS, ["message_pk", "entry"]), offers)

    def _checked(
        self,
        item: Work,
        decision: Decision,
        tiers: dict[int, str],
        blocked: dict[str, str],
        limiter: RateLimiter,
        now: datetime,
    ) -> Rendered | None:
        """The reply to send, after suppression, rendering and rate limits; else None."""
        if not decision.replies:
            return None
        assert decision.rule is not None and decision.recipient is not None
        reason = blocked.get(decision.recipient)
        if reason is not None:
            decision.reason = f"{decision.recipient} is suppressed ({reason})"
            decision.rule = None
            return None
        tier = tiers.get(int(item.facts.get("contact_id") or 0))
        draft: Rendered | str | None = item.facts.get("draft")
        if (
            draft is None
            or early_rules_changed(item, decision)
            # the classify step decided otherwise at commit (a tier override)
            or item.facts.get("draft_for")
            != (item.facts.get("department"), item.facts.get("urgency"))
            or tier not in DEFAULT_TIERS
            # a subject cut short through a stand-in: render again with the real ticket
            or (
                isinstance(draft, Rendered)
                and draft.subject.count("\ue000") != draft.subject.count("\ue001")
            )
        ):
            draft = self._draft(item, decision, tier, now, False)
        if isinstance(draft, str):
            decision.reason = draft
            decision.rule = None
            return None
        stop = limiter.allow(decision.recipient, decision.rule.name)
        if stop is not None:
            decision.reason = stop
            decision.rule = None
            return None
        return draft

    def expected_answer(
        self, rule: ReplyRule, urgency: str | None, start: datetime, language: str
    ) -> dict[str, Any]:
        """When the customer may expect a human answer, on the rule's business calendar."""
        minutes = rule.answer_within.get(urgency or "", rule.answer_within.get("default", 480.0))
        calendar = self.calendars.get(rule.calendar) if rule.calendar else None
        if calendar is not None:
            due = calendar.add(start, minutes)
        else:
            due = start + timedelta(minutes=minutes)
        return {
            "at": due.isoformat(),
            "text": describe(due, calendar, language),
            "business_minutes": minutes,
        }

    def context(
        self, item: Work, decision: Decision, tier: str | None, now: datetime
    ) -> dict[str, Any]:
        """The variables a reply template sees (documented in templates/README.md)."""
        assert decision.rule is not None
        message = item.message()
        rules = self.rules.current
        tags = TicketTags(rules.conversations.ticket_prefix)
        conversation_id = item.facts.get("conversation_id")
        urgency = item.facts.get("urgency")
        sender_name = message.sender.name if message.sender else None
        return {
            "ticket": tags.tag(int(conversation_id)) if conversation_id is not None else "",
            "ticket_id": conversation_id,
            "customer": {
                "name": item.facts.get("contact_name") or sender_name or None,
                "address": decision.recipient,
                "tier": tier or "ordinary",
            },
            "subject": tags.strip(message.subject).strip(),
            "department": item.facts.get("department"),
            "urgency": urgency,
            "language": message.language,
            "expected_answer": self.expected_answer(decision.rule, urgency, now, message.language),
            "faq": [
                {
                    "id": m.entry.id,
                    "question": m.entry.question,
                    "answer": m.entry.answer,
                    "url": m.entry.url,
                }
                for m in decision.faq
            ],
            "company": {
                "name": rules.identity.company.name,
                "signature": rules.identity.company.signature,
            },
        }

    def compose(
        self, item: Work, decision: Decision, draft: Rendered, now: datetime
    ) -> OutgoingMail:
        """Fill the ticket into the rendered reply and build its bytes."""
        assert decision.rule is not None and decision.recipient is not None
        rule = decision.rule
        message = item.message()
        conversation_id = item.facts.get("conversation_id")
        tags = TicketTags(self.rules.current.conversations.ticket_prefix)
        ticket = tags.tag(int(conversation_id)) if conversation_id is not None else ""
        ticket_id = str(conversation_id) if conversation_id is not None else ""

        def filled(text: str) -> str:
            return text.replace(TICKET, ticket).replace(TICKET_ID, ticket_id)

        rendered = Rendered(
            subject=" ".join(filled(draft.subject).split()),
            text=filled(draft.text),
            html=filled(draft.html) if draft.html is not None else None,
            variant=draft.variant,
        )
        customer = item.facts.get("contact_name") or (
            message.sender.name if message.sender else None
        )
        name, sender = split_mailbox(rule.sender)
        key = f"reply:{item.pk}:{rule.name}"
        mid = message_id(self.key, key, sender.rpartition("@")[2])
        references = [*message.references]
        if message.message_id:
            references.append(message.message_id)
        raw = Outgoing(
            sender=mailbox(name, sender),
            to=[mailbox(customer, decision.recipient)],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html if rule.html else None,
            message_id=mid,
            date=now,
            in_reply_to=message.message_id,
            references=references,
            extra=(
                ("Auto-Submitted", "auto-replied"),
                ("X-Auto-Response-Suppress", "All"),
                ("Precedence", "auto_reply"),
                (self.identity.loop_header, self.identity.loop_token),
            ),
        ).build()
        return OutgoingMail(
            key=key,
            kind="auto-reply",
            message_id=mid,
            mail_from="",
            recipients=(decision.recipient,),
            raw=raw,
            message_pk=item.pk,
            conversation_id=int(conversation_id) if conversation_id is not None else None,
            rule=rule.name,
        )
