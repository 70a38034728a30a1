"""The SLA sweep: announces warnings and breaches that fell due, each exactly once.

The scheduler only wakes the sweep; what is due and what was announced lives in the
`sla_clocks` rows. A notification is an outbox row keyed by conversation, target, round and
kind, queued in the same transaction that marks it announced, so neither a crash nor two
daemons sweeping at once can send it twice.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from .calendar import describe
from .compose import automatic
from .database import Database
from .interfaces import Clock
from .outbox import Outbox, OutgoingMail
from .render import TemplateStore
from .rules import Rules
from .screening import Identity
from .sla import CLOCKS, CONTACTS, CONVERSATIONS, SlaBook
from .threads import TicketTags

log = logging.getLogger(__name__)

RETRY_SECONDS = 300  # a notification that could not be rendered is tried again this much later
TARGET_LABELS = {
    "first_response": "first response",
    "next_response": "next response",
    "resolution": "resolution",
}


def _due_checks(row: Any, now: float) -> tuple[list[str], list[str], float | None]:
    """(checks to announce now, checks to mark announced, the next check's epoch)."""
    notified = set(json.loads(row.notified or "[]"))
    checks = [(key, at) for key, at in json.loads(row.checks or "[]") if key not in notified]
    due = [key for key, at in checks if at <= now]
    later = [at for key, at in checks if at > now]
    breached = {key.rsplit(":", 1)[0] for key in due if key.endswith(":breach")}
    # a warning whose breach is also due already is not worth a mail of its own
    announce = [k for k in due if k.endswith(":breach") or k.rsplit(":", 1)[0] not in breached]
    return announce, due, min(later) if later else None


class Sweeper:
    """Finds clocks with a warning or breach due and queues one notification for each."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        book: SlaBook,
        templates: TemplateStore,
        outbox: Outbox | None,
        identity: Identity,
        mid_key: bytes,
        batch: int = 1000,
    ) -> None:
        self.db = db
        self.clock = clock
        self.book = book
        self.templates = templates
        self.outbox = outbox
        self.identity = identity
        self.mid_key = mid_key
        self.batch = batch
        self._rules: Rules | None = None
        self.queued = 0
        self.runs = 0

    def run(self) -> int:
        """One sweep; returns the number of notifications queued."""
        rules = self.book.rules()
        if self._rules is not None and rules is not self._rules:
            count = self.recompute_open()
            log.info("rules changed: %d open SLA clocks recomputed", count)
        self._rules = rules
        if self.outbox is None or not rules.sla.enabled:
            self.runs += 1
            return 0
        if self.templates.changed():
            self.templates.reload()
        queued = 0
        while True:
            with self.db.transaction() as conn:
                handled, mails = self._sweep_batch(conn, rules)
                if mails:
                    queued += self.outbox.enqueue(conn, mails)
            if handled < self.batch:
                break
        if queued:
            self.outbox.notify()
            log.info("SLA sweep: %d notifications queued", queued)
        self.queued += queued
        self.runs += 1
        return queued

    def recompute_open(self) -> int:
        """Recompute every clock not resolved (after a policy change)."""
        with self.db.reading() as conn:
            ids = [
                int(conv)
                for (conv,) in conn.execute(
                    select(CLOCKS.c.conversation_id).where(CLOCKS.c.status != "resolved")
                )
            ]
        for start in range(0, len(ids), 2000):
            with self.db.transaction() as conn:
                self.book.recompute(conn, ids[start : start + 2000])
        return len(ids)

    def _sweep_batch(self, conn: Connection, rules: Rules) -> tuple[int, list[OutgoingMail]]:
        now = self.clock.now()
        rows = conn.execute(
            select(
                CLOCKS.c.conversation_id,
                CLOCKS.c.checks,
                CLOCKS.c.notified,
                CLOCKS.c.department,
                CLOCKS.c.urgency,
                CLOCKS.c.policy,
                CLOCKS.c.calendar,
                CLOCKS.c.opened_at,
                CLOCKS.c.waiting_since,
                CLOCKS.c.first_response_due,
                CLOCKS.c.next_response_due,
                CLOCKS.c.resolution_due,
                CONVERSATIONS.c.subject,
                CONTACTS.c.address,
                CONTACTS.c.name,
            )
            .select_from(CLOCKS.join(CONVERSATIONS).outerjoin(CONTACTS))
            .where(CLOCKS.c.next_check_at <= now)
            .order_by(CLOCKS.c.next_check_at)
            .limit(self.batch)
        ).all()
        mails: list[OutgoingMail] = []
        updates: list[dict[str, Any]] = []
        stamp = now.timestamp()
        for row in rows:
            announce, done, next_at = _due_checks(row, stamp)
            for check in announce:
                try:
                    mail = self.compose(rules, row, check, now)
                except Exception as exc:  # one broken template must not stop the sweep
                    log.error(
                        "conversation %s: %s not announced, tried again in %ds: %s",
                        row.conversation_id,
                        check,
                        RETRY_SECONDS,
                        exc,
                    )
                    done.remove(check)
                    retry = stamp + RETRY_SECONDS
                    next_at = retry if next_at is None else min(next_at, retry)
                    continue
                if mail is not None:
                    mails.append(mail)
            notified = sorted(set(json.loads(row.notified or "[]")) | set(done))
            updates.append(
                {
                    "c_id": row.conversation_id,
                    "c_notified": json.dumps(notified),
                    "c_next": datetime.fromtimestamp(next_at, tz=UTC) if next_at else None,
                }
            )
        if updates:
            conn.execute(
                update(CLOCKS)
                .where(CLOCKS.c.conversation_id == bindparam("c_id"))
                .values(notified=bindparam("c_notified"), next_check_at=bindparam("c_next")),
                updates,
            )
        return len(rows), mails

    def compose(self, rules: Rules, row: Any, check: str, now: datetime) -> OutgoingMail | None:
        """The notification for one check of one conversation, or None without a lead."""
        sla = rules.sla
        lead = sla.lead_for(row.department)
        if lead is None or sla.notify_from is None:
            log.warning(
                "conversation %s: %s due but no lead address (sla.leads) for department %s",
                row.conversation_id,
                check,
                row.department,
            )
            return None
        target, round_no, kind = check.rsplit(":", 2)
        due = {
            "first_response": row.first_response_due,
            "next_response": row.next_response_due,
            "resolution": row.resolution_due,
        }[target]
        calendar = self.book.calendars.get(rules, row.calendar)
        conv = int(row.conversation_id)
        tag = TicketTags(rules.conversations.ticket_prefix).tag(conv)
        context = {
            "kind": kind,
            "target": target,
            "target_label": TARGET_LABELS[target],
            "round": int(round_no),
            "ticket": tag,
            "subject": row.subject or "",
            "customer": {"name": row.name, "address": row.address},
            "department": row.department,
            "urgency": row.urgency,
            "policy": row.policy,
            "due": describe(due, calendar) if due is not None else None,
            "opened": describe(row.opened_at, calendar),
            "waiting_since": (
                describe(row.waiting_since, calendar) if row.waiting_since is not None else None
            ),
            "minutes_left": (
                round(self.book.calendars.minutes(calendar, now, due)) if due is not None else None
            ),
            "company": {
                "name": rules.identity.company.name,
                "signature": rules.identity.company.signature,
            },
        }
        rendered = self.templates.render(
            "notifications",
            f"{sla.notify_template}-{kind}",
            context,
            department=row.department,
            urgency=row.urgency,
        )
        return automatic(
            f"sla:{conv}:{check}",
            f"sla-{kind}",
            sla.notify_from,
            (lead, lead),
            rendered,
            self.mid_key,
            (self.identity.loop_header, self.identity.loop_token),
            now,
            conv,
        )
