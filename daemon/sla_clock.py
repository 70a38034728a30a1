"""The SLA clock of one conversation, computed from its events (pure: no database, no now).

Events are what happened: the customer opened the conversation or wrote again, a person
responded, an agent paused the clock (waiting on the customer) or resumed it, the
conversation was resolved or reopened. From them and a policy the clock derives every
target's start, due time, warning time and outcome. Recomputing from the events is how a
policy change or a late event (a reply found later in the Sent folder) takes effect.

The clock is stopped while paused, while resolved, and (with `pause_while_waiting`) while
the last word is ours. Stopped time never counts towards a target.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .calendar import BusinessCalendar
from .clock import utc
from .sla_config import Policy

KINDS = ("opened", "customer", "response", "paused", "resumed", "resolved", "reopened")
CUSTOMER_KINDS = frozenset({"opened", "customer", "reopened"})


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to a conversation."""

    kind: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Target:
    """One target of one conversation: when it started, fell due, and was met."""

    name: str  # first_response, next_response, resolution
    round: int  # 0, or the number of the next-response round (1, 2, ...)
    started_at: datetime
    allowed: float  # minutes
    due_at: datetime | None  # None while the clock is stopped short of the target
    warn_at: datetime | None
    done_at: datetime | None  # the response or resolution that met it (late or not)
    minutes: float | None  # counted minutes from start to done_at
    # when it fell or would have fallen due, counting only stops that began before done_at
    # (a met target's due time, which the report compares with done_at)
    deadline: datetime | None = None

    @property
    def breached(self) -> bool:
        """Met late, or not met before the clock stopped for good past its due time."""
        if self.due_at is None:
            return False
        return self.done_at is None or self.done_at > self.due_at

    def breached_by(self, now: datetime) -> bool:
        """Whether the target counts as breached at `now`."""
        if self.due_at is None:
            return False
        if self.done_at is not None:
            return self.done_at > self.due_at
        return now >= self.due_at


@dataclass(frozen=True, slots=True)
class ClockState:
    """What the events say about a conversation under a policy."""

    status: str  # open, paused, resolved
    opened_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    waiting_since: datetime | None  # the oldest customer message not yet answered
    targets: tuple[Target, ...] = field(default_factory=tuple)

    def target(self, name: str) -> Target | None:
        """The latest target of that name (the current next-response round)."""
        found = [t for t in self.targets if t.name == name]
        return found[-1] if found else None

    def open_targets(self) -> list[Target]:
        """Targets not yet met whose clock still runs (they can still warn or breach)."""
        return [t for t in self.targets if t.done_at is None and t.due_at is not None]


class Meter:
    """Counts minutes on a business calendar, or on the wall clock without one."""

    def __init__(self, calendar: BusinessCalendar | None) -> None:
        self.calendar = calendar

    def between(self, a: datetime, b: datetime) -> float:
        """Minutes counted in [a, b)."""
        if self.calendar is not None:
            return self.calendar.between(a, b)
        return max(0.0, (b - a).total_seconds() / 60)

    def add(self, a: datetime, minutes: float) -> datetime:
        """The instant at which `minutes` counted minutes have passed after a."""
        if self.calendar is not None:
            return self.calendar.add(a, minutes)
        return a + timedelta(minutes=minutes)


Stop = tuple[datetime, datetime | None]


class _Running:
    """The running stretches of the clock: the complement of its stops."""

    def __init__(self, meter: Meter, stops: Sequence[Stop]) -> None:
        self.meter = meter
        self.stops = stops

    def segments(self, start: datetime) -> Iterable[tuple[datetime, datetime | None]]:
        cursor = start
        for begin, end in self.stops:
            if end is not None and end <= cursor:
                continue
            if begin > cursor:
                yield cursor, begin
            if end is None:
                return
            cursor = max(cursor, end)
        yield cursor, None

    def counted(self, start: datetime, end: datetime) -> float:
        """Minutes that count between start and end."""
        total = 0.0
        for a, b in self.segments(start):
            if a >= end:
                break
            total += self.meter.between(a, end if b is None else min(b, end))
        return total

    def reach(self, start: datetime, minutes: float) -> datetime | None:
        """When `minutes` counted minutes will have passed, or None if the clock stops first."""
        remaining = minutes
        for a, b in self.segments(start):
            if b is None:
                return self.meter.add(a, remaining)
            available = self.meter.between(a, b)
            if remaining <= available:
                return self.meter.add(a, remaining)
            remaining -= available
        return None


def _stops(events: Sequence[Event], pause_while_waiting: bool) -> tuple[list[Stop], str]:
    """The intervals in which the clock stood still, and the status after the last event."""
    stops: list[Stop] = []
    paused = resolved = waiting = False
    since: datetime | None = None
    for event in events:
        was_stopped = paused or resolved or waiting
        kind = event.kind
        if kind in CUSTOMER_KINDS:
            paused = waiting = False  # the customer answered what we waited for
            if kind == "reopened" or (kind != "opened" and resolved):
                resolved = False
        elif kind == "response":
            waiting = pause_while_waiting
        elif kind == "paused":
            paused = True
        elif kind == "resumed":
            paused = False
        elif kind == "resolved":
            resolved = True
        stopped = paused or resolved or waiting
        if stopped and not was_stopped:
            since = event.at
        elif was_stopped and not stopped and since is not None:
            if event.at > since:
                stops.append((since, event.at))
            since = None
    if since is not None:
        stops.append((since, None))
    status = "resolved" if resolved else "paused" if (paused or waiting) else "open"
    return stops, status


def ordered(events: Iterable[Event]) -> list[Event]:
    """Events by time; at one instant the customer's come first, then ours, then stops."""
    rank = {kind: index for index, kind in enumerate(KINDS)}
    return sorted(events, key=lambda e: (e.at, rank.get(e.kind, len(KINDS))))


def evaluate(
    events: Iterable[Event], policy: Policy | None, calendar: BusinessCalendar | None
) -> ClockState:
    """The clock of one conversation under a policy (calendar None: wall-clock minutes).

    Without a policy the clock only measures: every target runs without a due time.
    """
    # In UTC: wall-clock arithmetic and order on aware local times go wrong across DST.
    timeline = ordered(Event(e.kind, utc(e.at)) for e in events)
    opened = next((e.at for e in timeline if e.kind in CUSTOMER_KINDS), None)
    if opened is None:
        return ClockState("open", None, None, None, None)
    timeline = [e for e in timeline if e.at >= opened]
    stops, status = _stops(timeline, policy is not None and policy.pause_while_waiting)
    running = _Running(Meter(calendar if policy is None or policy.business else None), stops)

    first_response: datetime | None = None
    resolved_at: datetime | None = None
    unanswered: datetime | None = None  # oldest customer message since our last response
    rounds: list[tuple[datetime, datetime | None]] = []
    for event in timeline:
        if event.kind in CUSTOMER_KINDS:
            if unanswered is None:
                unanswered = event.at
                if first_response is not None:
                    rounds.append((event.at, None))
        elif event.kind == "response":
            if first_response is None:
                first_response = event.at
            elif unanswered is not None and rounds and rounds[-1][1] is None:
                rounds[-1] = (rounds[-1][0], event.at)
            unanswered = None
        elif event.kind == "resolved":
            resolved_at = event.at
    if status != "resolved":
        resolved_at = None

    def target(name: str, round_no: int, start: datetime, done: datetime | None) -> Target | None:
        minutes = running.counted(start, done) if done is not None else None
        if policy is None:
            return Target(name, round_no, start, math.inf, None, None, done, minutes, None)
        allowed = policy.target(name)
        if allowed is None:
            return None
        due = running.reach(start, allowed)
        warn = None
        if policy.warn is not None and due is not None:
            leads: list[float] = []
            if policy.warn.at_percent is not None:
                leads.append(allowed * policy.warn.at_percent / 100)
            if policy.warn.before is not None:
                leads.append(max(0.0, allowed - policy.warn.before))
            reached = [w for w in (running.reach(start, m) for m in leads) if w is not None]
            warn = min(reached, default=None)  # a warning with neither share nor lead: none
        deadline = due
        if done is not None:  # stops that began at or after done_at cannot move it
            before = _Running(running.meter, [s for s in stops if s[0] < done])
            deadline = before.reach(start, allowed)
        return Target(name, round_no, start, allowed, due, warn, done, minutes, deadline)

    targets: list[Target | None] = [target("first_response", 0, opened, first_response)]
    targets.extend(
        target("next_response", number, start, done)
        for number, (start, done) in enumerate(rounds, start=1)
    )
    targets.append(target("resolution", 0, opened, resolved_at))
    return ClockState(
        status,
        opened,
        first_response,
        resolved_at,
        unanswered,
        tuple(t for t in targets if t is not None),
    )
