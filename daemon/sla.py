"""SLA clocks in the database: events are recorded once, clocks recomputed from them.

Every source of events (the customer's mail in the pipeline, the submission port, the Sent
folder, the resolved folder or keyword, commands) calls `SlaBook.record` in its own
transaction; the clocks of the conversations that changed are recomputed in the same
transaction, so a clock never disagrees with its events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from .calendar import BusinessCalendar
from .inbox import MESSAGES, insert_ignoring, insert_updating
from .interfaces import Clock
from .rules import Rules
from .sla_clock import ClockState, Event, Meter, Target, evaluate
from .sla_config import Policy
from .tables import Contact, Conversation, SlaClock, SlaEvent

log = logging.getLogger(__name__)

EVENTS: Table = SlaEvent.__table__  # type: ignore[assignment]
CLOCKS: Table = SlaClock.__table__  # type: ignore[assignment]
CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
CONTACTS: Table = Contact.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to record; `key` names it so that recording it twice is harmless."""

    key: str
    conversation_id: int
    kind: str
    at: datetime
    source: str
    message_pk: int | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """A conversation that became resolved in a recompute (the survey follows it)."""

    conversation_id: int
    resolved_at: datetime
    department: str | None
    urgency: str | None


Labels = tuple[str | None, str | None]  # department, urgency
ResolvedHook = Callable[[Connection, Sequence[Resolution], Rules], None]


class Calendars:
    """BusinessCalendar objects for the calendars of the current rules, built once per rules."""

    def __init__(self) -> None:
        self._rules: Rules | None = None
        self._built: dict[str, BusinessCalendar] = {}

    def get(self, rules: Rules, name: str | None) -> BusinessCalendar | None:
        """The calendar called name (None: wall clock)."""
        if rules is not self._rules:
            self._rules, self._built = rules, {}
        if name is None or name not in rules.calendars:
            return None
        if name not in self._built:
            self._built[name] = BusinessCalendar.from_config(rules.calendars[name])
        return self._built[name]

    @staticmethod
    def minutes(calendar: BusinessCalendar | None, a: datetime, b: datetime) -> float:
        """Counted minutes from a to b; negative when b is before a."""
        meter = Meter(calendar)
        return meter.between(a, b) if b >= a else -meter.between(b, a)


def check_key(target: Target, kind: str) -> str:
    """The name of one announcement: e.g. first_response:0:warning."""
    return f"{target.name}:{target.round}:{kind}"


def _epoch(value: datetime) -> float:
    return value.timestamp()


class SlaBook:
    """Records SLA events and keeps each conversation's clock row up to date."""

    def __init__(self, rules: Callable[[], Rules], clock: Clock) -> None:
        self.rules = rules
        self.clock = clock
        self.calendars = Calendars()
        self._resolved_hooks: list[ResolvedHook] = []

    def on_resolved(self, hook: ResolvedHook) -> None:
        """Call hook, in the recording transaction, for conversations that became resolved."""
        self._resolved_hooks.append(hook)

    def record(
        self,
        conn: Connection,
        events: Iterable[NewEvent],
        labels: Mapping[int, Labels] | None = None,
    ) -> list[int]:
        """Insert the events not recorded before and recompute their conversations' clocks.

        labels: (department, urgency) of conversations whose opening message is being
        processed in this very transaction and has no stored classification yet.
        """
        now = self.clock.now()
        rows = [
            {
                "key": e.key[:200],
                "conversation_id": e.conversation_id,
                "kind": e.kind,
                "at": e.at,
                "source": e.source[:32],
                "message_pk": e.message_pk,
                "detail": e.detail,
                "recorded_at": now,
            }
            for e in events
        ]
        if not rows:
            return []
        rows.sort(key=lambda row: str(row["key"]))
        statement = insert_ignoring(conn, EVENTS, ["key"]).returning(EVENTS.c.conversation_id)
        changed = sorted({int(conv) for (conv,) in conn.execute(statement, rows)})
        if changed:
            self.recompute(conn, changed, labels)
        return changed

    def status(self, conn: Connection, conversation_ids: Sequence[int]) -> dict[int, str]:
        """The clock status of each conversation that has a clock."""
        if not conversation_ids:
            return {}
        rows = conn.execute(
            select(CLOCKS.c.conversation_id, CLOCKS.c.status).where(
                CLOCKS.c.conversation_id.in_(sorted(set(conversation_ids)))
            )
        )
        return {int(conv): status for conv, status in rows}

    def recompute(
        self,
        conn: Connection,
        conversation_ids: Sequence[int],
        labels: Mapping[int, Labels] | None = None,
    ) -> int:
        """Derive the clocks of these conversations from their events and the current policy."""
        rules = self.rules()
        ids = sorted(set(conversation_ids))
        resolutions: list[Resolution] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            resolutions.extend(self._recompute(conn, rules, chunk, labels or {}))
        if resolutions:
            for hook in self._resolved_hooks:
                hook(conn, resolutions, rules)
        return len(ids)

    def _recompute(
        self, conn: Connection, rules: Rules, ids: list[int], hints: Mapping[int, Labels]
    ) -> list[Resolution]:
        events: dict[int, list[Event]] = {conv: [] for conv in ids}
        for conv, kind, at in conn.execute(
            select(EVENTS.c.conversation_id, EVENTS.c.kind, EVENTS.c.at).where(
                EVENTS.c.conversation_id.in_(ids)
            )
        ):
            events[int(conv)].append(Event(kind, at))
        facts = {
            int(row.id): row
            for row in conn.execute(
                select(CONVERSATIONS.c.id, CONVERSATIONS.c.mailbox, CONTACTS.c.tier)
                .select_from(CONVERSATIONS.outerjoin(CONTACTS))
                .where(CONVERSATIONS.c.id.in_(ids))
            )
        }
        labels: dict[int, Labels] = {}
        for conv, department, urgency in conn.execute(
            select(MESSAGES.c.conversation_id, MESSAGES.c.department, MESSAGES.c.urgency)
            .where(MESSAGES.c.conversation_id.in_(ids), MESSAGES.c.department.is_not(None))
            .order_by(MESSAGES.c.id)
        ):
            labels.setdefault(int(conv), (department, urgency))  # the opening message decides
        for conv, hint in hints.items():
            labels.setdefault(conv, hint)
        before = {
            int(conv): (status, notified)
            for conv, status, notified in conn.execute(
                select(CLOCKS.c.conversation_id, CLOCKS.c.status, CLOCKS.c.notified).where(
                    CLOCKS.c.conversation_id.in_(ids)
                )
            )
        }
        now = self.clock.now()
        rows: list[dict[str, Any]] = []
        resolutions: list[Resolution] = []
        for conv in ids:
            if not events[conv] or conv not in facts:
                continue
            department, urgency = labels.get(conv, (None, None))
            mailbox, tier = facts[conv].mailbox, facts[conv].tier
            policy = rules.sla.policy_for(department, urgency, tier, mailbox)
            # without a policy, times are still measured (on the default calendar)
            calendar_name = rules.sla.calendar_of(policy) if policy else rules.sla.calendar
            calendar = self.calendars.get(rules, calendar_name)
            state = evaluate(events[conv], policy, calendar)
            if state.opened_at is None:
                continue
            old_status, notified = before.get(conv, (None, "[]"))
            row = _row(state, policy, notified)
            row.update(
                conversation_id=conv,
                policy=policy.name if policy else None,
                mailbox=mailbox,
                department=department,
                urgency=urgency,
                tier=tier,
                calendar=calendar_name,
                notified=notified,
                updated_at=now,
            )
            rows.append(row)
            if state.status == "resolved" and old_status != "resolved" and state.resolved_at:
                resolutions.append(Resolution(conv, state.resolved_at, department, urgency))
        if rows:
            _upsert(conn, rows)
        return resolutions


def _row(state: ClockState, policy: Policy | None, notified_json: str) -> dict[str, Any]:
    """The clock row's columns for an evaluated state."""
    first = state.target("first_response")
    resolution = state.target("resolution")
    rounds = [t for t in state.targets if t.name == "next_response"]
    current = rounds[-1] if rounds and rounds[-1].done_at is None else None
    finished = [t for t in rounds if t is not current or state.status == "resolved"]
    has_policy = policy is not None

    def due(target: Target | None) -> datetime | None:
        return target.deadline if has_policy and target is not None else None

    notified = set(json.loads(notified_json or "[]"))
    checks: list[list[Any]] = []
    if has_policy and state.status != "resolved":
        for target in state.open_targets():
            assert target.due_at is not None
            if target.warn_at is not None and target.warn_at < target.due_at:
                checks.append([check_key(target, "warning"), _epoch(target.warn_at)])
            checks.append([check_key(target, "breach"), _epoch(target.due_at)])
    pending = [at for key, at in checks if key not in notified]
    next_check = min(pending) if pending else None
    return {
        "status": state.status,
        "opened_at": state.opened_at,
        "waiting_since": state.waiting_since if state.status != "resolved" else None,
        "first_response_due": due(first),
        "first_response_at": first.done_at if first else state.first_response_at,
        "first_response_minutes": first.minutes if first else None,
        "next_response_due": due(current) if state.status != "resolved" else None,
        "next_response_rounds": len(rounds),
        "next_response_breaches": sum(1 for t in finished if has_policy and t.breached),
        "resolution_due": due(resolution),
        "resolved_at": state.resolved_at,
        "resolution_minutes": resolution.minutes if resolution else None,
        "checks": json.dumps(checks),
        "next_check_at": (
            datetime.fromtimestamp(next_check, tz=UTC) if next_check is not None else None
        ),
    }


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or replace clock rows, keeping the record of what was already announced."""
    keep = {"conversation_id", "notified"}
    columns = [c.name for c in CLOCKS.c if c.name not in keep]
    conn.execute(insert_updating(conn, CLOCKS, ["conversation_id"], columns), rows)
