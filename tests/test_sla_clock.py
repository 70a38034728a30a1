"""The SLA clock against a minute walk that replays the events before every minute it counts."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.calendar import BusinessCalendar
from daemon.calendar_config import CalendarConfig, weekly_windows
from daemon.sla_clock import ClockState, Event, Target, evaluate
from daemon.sla_config import Policy, Warning

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)
CUSTOMER = frozenset({"opened", "customer", "reopened"})
# The order of events that share an instant, as the clock documents it.
TIE_ORDER = ("opened", "customer", "response", "paused", "resumed", "resolved", "reopened")

CALENDARS: dict[str, dict[str, Any]] = {
    # A split shift; the Monday after the autumn DST change is a company closure.
    "berlin_office": {
        "timezone": "Europe/Berlin",
        "hours": {"mon-fri": ["09:00-12:30", "13:30-18:00"]},
        "holidays": {"country": "DE", "subdivision": "BE", "dates": ["2026-10-26", "12-31"]},
    },
    # Three windows a day, a short Saturday and a Sunday night across the DST changes.
    "new_york_shifts": {
        "timezone": "America/New_York",
        "hours": {
            "mon-fri": ["07:00-11:00", "12:00-15:00", "16:00-20:00"],
            "sat": ["10:00-14:00"],
            "sun": ["00:30-03:30"],
        },
        "holidays": {"country": "US", "dates": ["11-27", "2026-03-09"]},
    },
    # Windows that run through midnight into the next day, and the DST night itself.
    "berlin_nights": {
        "timezone": "Europe/Berlin",
        "hours": {"mon-fri": ["00:00-06:00", "22:00-24:00"], "sun": ["01:00-04:00"]},
        "holidays": {"dates": ["12-24", "2026-04-06"]},
    },
    "always": {"timezone": "UTC", "always_open": True},
}
BUILT = {
    name: BusinessCalendar.from_config(CalendarConfig.model_validate(spec))
    for name, spec in CALENDARS.items()
}
# Fridays and Thursdays before DST changes and holidays in Berlin and New York (UTC).
ANCHORS = [
    datetime(2026, 3, 27, 8, 0, tzinfo=UTC),  # Berlin springs forward on Sunday 29 March
    datetime(2026, 10, 23, 8, 0, tzinfo=UTC),  # Berlin falls back on 25 October
    datetime(2026, 3, 6, 14, 0, tzinfo=UTC),  # New York springs forward on 8 March
    datetime(2026, 10, 30, 14, 0, tzinfo=UTC),  # New York falls back on 1 November
    datetime(2026, 4, 2, 8, 0, tzinfo=UTC),  # Good Friday, Easter Monday
    datetime(2026, 11, 25, 14, 0, tzinfo=UTC),  # Thanksgiving and the day after
    datetime(2026, 12, 23, 8, 0, tzinfo=UTC),  # Christmas, New Year's Eve and Day
]


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


# --- the slow reference ------------------------------------------------------------------------


@dataclass
class Replay:
    """The clock's state after the events so far, straight from the rules."""

    pause_while_waiting: bool
    paused: bool = False
    resolved: bool = False
    waiting: bool = False
    since: datetime | None = None  # when the current stop began

    def apply(self, event: Event) -> None:
        was_stopped = self.stopped
        kind = event.kind
        if kind in CUSTOMER:  # the customer wrote: no pause and no wait survive it
            self.paused = self.waiting = False
            if kind != "opened":  # a customer message after resolution reopens
                self.resolved = False
        elif kind == "response":
            self.waiting = self.pause_while_waiting
        elif kind in ("paused", "resumed"):
            self.paused = kind == "paused"
        elif kind == "resolved":
            self.resolved = True
        if not self.stopped:
            self.since = None
        elif not was_stopped:
            self.since = event.at

    @property
    def stopped(self) -> bool:
        return self.paused or self.resolved or self.waiting

    @property
    def status(self) -> str:
        return "resolved" if self.resolved else "paused" if self.stopped else "open"


_OPEN_CACHE: dict[tuple[str, datetime], bool] = {}


def open_minute(name: str, instant: datetime) -> bool:
    """Whether the calendar is open at the minute's start (checked in test_calendar.py)."""
    key = (name, instant)
    if key not in _OPEN_CACHE:
        _OPEN_CACHE[key] = BUILT[name].is_open(instant)
    return _OPEN_CACHE[key]


@dataclass
class MinuteWalk:
    """Decides for each minute after the opening whether it counts, one minute at a time.

    A minute is stopped when replaying every event up to its start leaves the clock stopped;
    `since` remembers when that stop began, for the deadline that ignores later stops.
    """

    timeline: Sequence[Event]
    pause_while_waiting: bool
    is_open: Callable[[datetime], bool]
    opens: list[bool] = field(default_factory=list)
    stops: list[datetime | None] = field(default_factory=list)
    replays: dict[int, Replay] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.origin = self.timeline[0].at
        self.last = self.index(self.timeline[-1].at)
        self.final = self.replay(len(self.timeline))

    def replay(self, count: int) -> Replay:
        """The state after the first `count` events (remembered: it is asked per minute)."""
        if count not in self.replays:
            state = Replay(self.pause_while_waiting)
            for event in self.timeline[:count]:
                state.apply(event)
            self.replays[count] = state
        return self.replays[count]

    def index(self, instant: datetime) -> int:
        return (instant - self.origin) // MINUTE

    def at(self, index: int) -> datetime:
        return self.origin + index * MINUTE

    def counts(self, index: int, ignore_stops_from: datetime | None = None) -> bool:
        while len(self.opens) <= index:
            start = self.at(len(self.opens))
            state = self.replay(sum(1 for event in self.timeline if event.at <= start))
            self.opens.append(self.is_open(start))
            self.stops.append(state.since if state.stopped else None)
        since = self.stops[index]
        ignored = since is not None and ignore_stops_from is not None and since >= ignore_stops_from
        return self.opens[index] and (since is None or ignored)

    def reach(
        self, start: datetime, minutes: int, ignore_stops_from: datetime | None = None
    ) -> datetime | None:
        """The end of the minute in which the count reaches `minutes`, None if it never does."""
        since = self.final.since
        for_good = since is not None and (ignore_stops_from is None or since < ignore_stops_from)
        count, index = 0, self.index(start)
        while True:
            if index >= self.last and for_good:
                return None
            if self.counts(index, ignore_stops_from):
                count += 1
                if count == minutes:
                    return self.at(index + 1)
            index += 1
            assert index < 60 * 1440, "the walk ran for two months"

    def counted(self, start: datetime, end: datetime) -> float:
        return float(sum(self.counts(i) for i in range(self.index(start), self.index(end))))


def by_time(events: Sequence[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.at, TIE_ORDER.index(e.kind)))


def leads(policy: Policy, allowed: int) -> list[int]:
    """The counted minutes after which the warning goes out (whole minutes in these tests)."""
    found = []
    if policy.warn is not None and policy.warn.at_percent is not None:
        share = allowed * policy.warn.at_percent / 100
        assert share == int(share)
        found.append(int(share))
    if policy.warn is not None and policy.warn.before is not None:
        found.append(allowed - int(policy.warn.before))
    return found


def reference(events: Sequence[Event], policy: Policy, calendar: str | None) -> ClockState:
    """What evaluate should say, by replaying the events minute by minute."""
    timeline = by_time(events)
    opened = next((e.at for e in timeline if e.kind in CUSTOMER), None)
    if opened is None:
        return ClockState("open", None, None, None, None)
    timeline = [e for e in timeline if e.at >= opened]
    final = Replay(policy.pause_while_waiting)
    for event in timeline:
        final.apply(event)
    responses = [i for i, e in enumerate(timeline) if e.kind == "response"]
    first_response = timeline[responses[0]].at if responses else None
    resolved_at = None
    if final.resolved:
        resolved_at = [e.at for e in timeline if e.kind == "resolved"][-1]
    last_word = responses[-1] + 1 if responses else 0
    unanswered = [e.at for e in timeline[last_word:] if e.kind in CUSTOMER]

    # A round: after each response, the customer's first message before our next response.
    rounds: list[tuple[datetime, datetime | None]] = []
    for number, position in enumerate(responses):
        following = responses[number + 1] if number + 1 < len(responses) else len(timeline)
        asked = [e.at for e in timeline[position + 1 : following] if e.kind in CUSTOMER]
        if asked:
            answered = timeline[following].at if following < len(timeline) else None
            rounds.append((asked[0], answered))

    if not policy.business or calendar is None:
        walk = MinuteWalk(timeline, policy.pause_while_waiting, lambda instant: True)
    else:
        name = calendar
        walk = MinuteWalk(
            timeline, policy.pause_while_waiting, lambda instant: open_minute(name, instant)
        )

    targets: list[Target] = []

    def add(name: str, number: int, start: datetime, done: datetime | None) -> None:
        allowed = policy.target(name)
        if allowed is None:
            return
        assert allowed == int(allowed)
        due = walk.reach(start, int(allowed))
        warn = None
        if due is not None and policy.warn is not None:
            moments = [walk.reach(start, lead) for lead in leads(policy, int(allowed))]
            warn = min((m for m in moments if m is not None), default=None)
        minutes = walk.counted(start, done) if done is not None else None
        # When it fell or would have fallen due had no stop begun at or after done_at.
        deadline = due if done is None else walk.reach(start, int(allowed), done)
        targets.append(Target(name, number, start, allowed, due, warn, done, minutes, deadline))

    add("first_response", 0, opened, first_response)
    for number, (start, done) in enumerate(rounds, start=1):
        add("next_response", number, start, done)
    add("resolution", 0, opened, resolved_at)
    return ClockState(
        final.status,
        opened,
        first_response,
        resolved_at,
        unanswered[0] if unanswered else None,
        tuple(targets),
    )


# --- strategies --------------------------------------------------------------------------------

calendar_names = st.sampled_from(sorted(CALENDARS))
warn_settings = st.one_of(
    st.none(),
    st.builds(
        Warning,
        at_percent=st.sampled_from([None, 25.0, 50.0, 75.0, 80.0]),
        before=st.sampled_from([None, 5.0, 15.0]),
    ),
)
kinds = st.sampled_from(
    ["customer", "customer", "response", "response", "paused", "resumed", "resolved", "reopened"]
)
# Minutes between events: moments, hours, or nights and weekends.
gaps = st.one_of(st.integers(0, 90), st.integers(90, 1440), st.integers(1440, 4 * 1440))
openings = st.builds(
    lambda anchor, offset: anchor + offset * MINUTE,
    st.sampled_from(ANCHORS),
    st.integers(-1440, 2 * 1440),
)


@st.composite
def policies(
    draw: st.DrawFn, business: bool | None = None, pause_while_waiting: bool | None = None
) -> Policy:
    first = draw(st.sampled_from([None, 20.0, 60.0, 120.0, 240.0]))
    following = draw(st.sampled_from([None, 20.0, 40.0, 60.0, 180.0]))
    resolution = draw(st.sampled_from([None, 240.0, 480.0, 960.0]))
    if first is None and following is None and resolution is None:
        resolution = 480.0
    return Policy(
        name="p",
        business=draw(st.booleans()) if business is None else business,
        first_response=first,
        next_response=following,
        resolution=resolution,
        warn=draw(warn_settings),
        pause_while_waiting=(
            draw(st.booleans()) if pause_while_waiting is None else pause_while_waiting
        ),
    )


def timeline_of(opened: datetime, first: str, steps: Sequence[tuple[str, int]]) -> list[Event]:
    events = [Event(first, opened)]
    at = opened
    for kind, gap in steps:
        at += gap * MINUTE
        events.append(Event(kind, at))
    return events


@st.composite
def histories(draw: st.DrawFn, steps: st.SearchStrategy[list[tuple[str, int]]]) -> list[Event]:
    """A conversation: maybe a stray event before it opens, the opening, then its steps."""
    opened = draw(openings)
    events = timeline_of(opened, draw(st.sampled_from(["opened", "customer"])), draw(steps))
    if draw(st.integers(0, 4)) == 0:
        kind = draw(st.sampled_from(["response", "paused", "resolved"]))
        events.append(Event(kind, opened - draw(st.integers(1, 600)) * MINUTE))
    return events


any_steps = st.lists(st.tuples(kinds, gaps), max_size=8)
any_histories = histories(any_steps)


def shuffled(events: Sequence[Event], seed: int) -> list[Event]:
    copy = list(events)
    random.Random(seed).shuffle(copy)
    return copy


def check_invariants(state: ClockState) -> None:
    for target in state.targets:
        if target.due_at is None:
            assert target.warn_at is None
            assert not target.breached
        else:
            assert target.due_at >= target.started_at
            if target.warn_at is not None:
                assert target.started_at <= target.warn_at <= target.due_at
        if target.minutes is not None and target.minutes > target.allowed:
            assert target.breached
        if target.done_at is not None and not target.breached:
            assert target.minutes is not None and target.minutes <= target.allowed


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(name=calendar_names, policy=policies(), events=any_histories, seed=st.integers(0, 99))
def test_evaluate_matches_the_minute_walk(
    name: str, policy: Policy, events: list[Event], seed: int
) -> None:
    state = evaluate(shuffled(events, seed), policy, BUILT[name])
    assert state == reference(events, policy, name)
    check_invariants(state)


ping_pong = st.lists(
    st.tuples(
        # The customer writes a minute or more after our response (at one instant, first).
        st.lists(
            st.tuples(st.sampled_from(["customer", "reopened"]), gaps.map(lambda gap: gap + 1)),
            min_size=1,
            max_size=2,
        ),
        st.lists(st.tuples(st.sampled_from(["paused", "resumed", "resolved"]), gaps), max_size=1),
        gaps.map(lambda gap: gap + 1),  # a reopening at the instant of a response comes last
    ),
    min_size=2,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(
    name=calendar_names,
    policy=policies(),
    opened=openings,
    answer=gaps,
    exchanges=ping_pong,
    unanswered=st.booleans(),
)
def test_next_response_rounds(
    name: str,
    policy: Policy,
    opened: datetime,
    answer: int,
    exchanges: list[tuple[list[tuple[str, int]], list[tuple[str, int]], int]],
    unanswered: bool,
) -> None:
    steps: list[tuple[str, int]] = [("response", answer)]
    for asked, stops, reply in exchanges:
        steps += asked + stops + [("response", reply)]
    if unanswered:
        steps.pop()
    events = timeline_of(opened, "opened", steps)
    state = evaluate(events, policy, BUILT[name])
    assert state == reference(events, policy, name)
    if policy.next_response is not None:
        rounds = [t for t in state.targets if t.name == "next_response"]
        assert [t.round for t in rounds] == list(range(1, len(exchanges) + 1))
        assert (rounds[-1].done_at is None) == unanswered
        assert state.target("next_response") == rounds[-1]
    check_invariants(state)


stopping = st.one_of(
    st.tuples(st.just("resolved"), st.just(False)),
    st.tuples(st.just("paused"), st.booleans()),
    st.tuples(st.just("response"), st.just(True)),  # then we wait on the customer for good
)


@settings(max_examples=80, deadline=None)
@given(
    name=calendar_names,
    data=st.data(),
    events=histories(st.lists(st.tuples(kinds, gaps), max_size=5)),
    stop=stopping,
    gap=gaps,
)
def test_targets_never_breach_once_the_clock_stops_for_good(
    name: str, data: st.DataObject, events: list[Event], stop: tuple[str, bool], gap: int
) -> None:
    kind, pause_while_waiting = stop
    policy = data.draw(policies(pause_while_waiting=pause_while_waiting))
    stopped_at = max(e.at for e in events) + (gap + 1) * MINUTE
    events = [*events, Event(kind, stopped_at)]
    state = evaluate(events, policy, BUILT[name])
    assert state == reference(events, policy, name)
    assert state.status in ("resolved", "paused")
    forever = stopped_at + timedelta(days=400)
    for target in state.targets:
        if target.done_at is None:
            assert target.due_at is None or target.due_at <= stopped_at
            assert target.breached_by(forever) == (target.due_at is not None)
            assert target.breached_by(stopped_at) == (target.due_at is not None)
            assert target.breached == target.breached_by(forever)
    open_targets = state.open_targets()
    assert all(t.due_at is not None and t.due_at <= stopped_at for t in open_targets)


@settings(max_examples=60, deadline=None)
@given(
    name=calendar_names,
    policy=policies(pause_while_waiting=True),
    events=histories(st.lists(st.tuples(kinds, gaps), min_size=2, max_size=7)),
)
def test_pause_while_waiting_stops_after_each_response(
    name: str, policy: Policy, events: list[Event]
) -> None:
    state = evaluate(events, policy, BUILT[name])
    assert state == reference(events, policy, name)
    without = policy.model_copy(update={"pause_while_waiting": False})
    relaxed = evaluate(events, without, BUILT[name])
    assert relaxed == reference(events, without, name)
    # Waiting only ever stops the clock: every due time is the same or later, every count lower.
    for waited, ran in zip(state.targets, relaxed.targets, strict=True):
        assert waited.started_at == ran.started_at
        if ran.due_at is None or waited.due_at is None:
            assert ran.due_at is not None or waited.due_at is None
        else:
            assert waited.due_at >= ran.due_at
        if waited.minutes is not None and ran.minutes is not None:
            assert waited.minutes <= ran.minutes


@settings(max_examples=60, deadline=None)
@given(name=calendar_names, policy=policies(business=True), events=any_histories)
def test_wall_clock_policies_ignore_the_calendar(
    name: str, policy: Policy, events: list[Event]
) -> None:
    wall = policy.model_copy(update={"business": False})
    expected = evaluate(events, wall, BUILT[name])
    assert expected == reference(events, wall, None)
    assert evaluate(events, policy, None) == expected
    assert evaluate(events, policy, BUILT["always"]) == expected


# The nights the clocks change, in the zone that changes them (UTC instants of the change).
DST_NIGHTS = [
    (BERLIN, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    (BERLIN, datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),
]


@settings(max_examples=80, deadline=None)
@given(
    name=calendar_names,
    policy=policies(),
    night=st.sampled_from(DST_NIGHTS),
    offset=st.integers(-300, 90),
    steps=st.lists(st.tuples(kinds, st.integers(0, 75)), max_size=6),
)
def test_local_event_times_across_dst_mean_their_instants(
    name: str,
    policy: Policy,
    night: tuple[ZoneInfo, datetime],
    offset: int,
    steps: list[tuple[str, int]],
) -> None:
    zone, change = night
    events = timeline_of(change + offset * MINUTE, "opened", steps)
    # Local times of one zone: the repeated hour differs only in `fold`.
    local_events = [Event(e.kind, e.at.astimezone(zone)) for e in events]
    state = evaluate(shuffled(local_events, offset), policy, BUILT[name])
    assert state == evaluate(events, policy, BUILT[name])
    assert state == reference(events, policy, name)


# --- examples computed by hand -----------------------------------------------------------------

OFFICE = BusinessCalendar(
    BERLIN,
    weekly_windows({"mon-fri": ["09:00-12:30", "13:30-18:00"]}),
    holiday_dates=lambda year: (
        {date(year, 12, day) for day in (24, 25, 26, 31)} | {date(year, 1, 1)}
    ),
)
FIRST_HOUR = Policy(name="first-hour", first_response=60, warn=Warning(at_percent=80, before=10))


def only(state: ClockState, name: str) -> Target:
    target = state.target(name)
    assert target is not None
    return target


def test_friday_evening_mail_is_due_monday_morning() -> None:
    events = [Event("opened", berlin(2026, 11, 20, 17, 30))]
    target = only(evaluate(events, FIRST_HOUR, OFFICE), "first_response")
    assert target.due_at == berlin(2026, 11, 23, 9, 30)
    # 80 % is 48 minutes (Monday 09:18), 10 before is 50 minutes (09:20): the earlier one wins.
    assert target.warn_at == berlin(2026, 11, 23, 9, 18)
    late = evaluate([*events, Event("response", berlin(2026, 11, 23, 9, 40))], FIRST_HOUR, OFFICE)
    assert only(late, "first_response").minutes == 70
    assert only(late, "first_response").breached
    in_time = [*events, Event("response", berlin(2026, 11, 23, 9, 25))]
    met = only(evaluate(in_time, FIRST_HOUR, OFFICE), "first_response")
    assert met.minutes == 55
    assert not met.breached


def test_a_pause_over_the_weekend_shifts_the_due_time() -> None:
    opened = Event("opened", berlin(2026, 11, 20, 16, 30))
    unpaused = evaluate([opened], FIRST_HOUR, OFFICE)
    assert only(unpaused, "first_response").due_at == berlin(2026, 11, 20, 17, 30)
    paused = Event("paused", berlin(2026, 11, 20, 17, 0))
    for ends in ("resumed", "customer"):  # a customer message ends a pause too
        events = [opened, paused, Event(ends, berlin(2026, 11, 23, 10, 0))]
        state = evaluate(events, FIRST_HOUR, OFFICE)
        assert only(state, "first_response").due_at == berlin(2026, 11, 23, 10, 30)
        assert state.status == "open"
        assert state.waiting_since == berlin(2026, 11, 20, 16, 30)
    # A working day is 480 minutes: 30 on Friday, 450 on Monday, 30 more on Tuesday.
    day = Policy(name="day", resolution=480, warn=None)
    resumed = [opened, paused, Event("resumed", berlin(2026, 11, 23, 10, 0))]
    assert only(evaluate(resumed, day, OFFICE), "resolution").due_at == berlin(2026, 11, 24, 9, 30)
    still_paused = evaluate([opened, paused], FIRST_HOUR, OFFICE)
    assert still_paused.status == "paused"
    assert only(still_paused, "first_response").due_at is None


def test_lunch_break_is_not_counted() -> None:
    events = [Event("customer", berlin(2026, 11, 23, 12, 0))]
    assert only(evaluate(events, FIRST_HOUR, OFFICE), "first_response").due_at == berlin(
        2026, 11, 23, 14, 0
    )


def test_dst_weekend_and_a_closed_monday() -> None:
    cal = BUILT["berlin_office"]  # 26 October 2026 is a company closure
    events = [Event("opened", berlin(2026, 10, 23, 17, 30))]  # CEST
    target = only(evaluate(events, FIRST_HOUR, cal), "first_response")
    assert target.due_at == datetime(2026, 10, 27, 8, 30, tzinfo=UTC)  # 09:30 CET


def test_christmas_and_new_year_closures() -> None:
    cal = BUILT["berlin_office"]  # German holidays, New Year's Eve closed every year
    two_days = Policy(name="two-days", resolution=960, warn=None)
    # 60 on Wednesday, 480 on Christmas Eve (open here), 420 on Monday after two holidays.
    state = evaluate([Event("opened", berlin(2026, 12, 23, 17, 0))], two_days, cal)
    assert only(state, "resolution").due_at == berlin(2026, 12, 28, 17, 0)
    # With the Christmas Eve closure of OFFICE: 60, then Monday 480, Tuesday 420.
    state = evaluate([Event("opened", berlin(2026, 12, 23, 17, 0))], two_days, OFFICE)
    assert only(state, "resolution").due_at == berlin(2026, 12, 29, 17, 0)
    two_hours = Policy(name="two-hours", first_response=120, warn=None)
    state = evaluate([Event("opened", berlin(2026, 12, 30, 17, 0))], two_hours, cal)
    assert only(state, "first_response").due_at == berlin(2027, 1, 4, 10, 0)


def test_wall_clock_minutes_are_elapsed_time_across_dst() -> None:
    wall = Policy(name="wall", first_response=240, business=False, warn=Warning(at_percent=50))
    events = [
        Event("opened", berlin(2026, 3, 28, 23, 0)),  # 22:00 UTC
        Event("response", berlin(2026, 3, 29, 3, 30)),  # CEST: 01:30 UTC
    ]
    target = only(evaluate(events, wall, OFFICE), "first_response")
    assert target.due_at == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)  # 04:00 CEST
    assert target.warn_at == datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    assert target.minutes == 210
    autumn = [Event("opened", datetime(2026, 10, 31, 23, 0, tzinfo=NEW_YORK))]  # EDT
    target = only(evaluate(autumn, wall, None), "first_response")
    assert target.due_at == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)  # 02:00 EST


def test_resolve_reopen_and_a_next_response_round() -> None:
    policy = Policy(name="p", first_response=60, next_response=60, resolution=480, warn=None)
    events = [
        Event("opened", berlin(2026, 11, 23, 9, 0)),
        Event("response", berlin(2026, 11, 23, 9, 30)),
        Event("resolved", berlin(2026, 11, 23, 10, 0)),
        Event("customer", berlin(2026, 11, 25, 9, 0)),  # reopens
        Event("customer", berlin(2026, 11, 25, 9, 5)),
        Event("response", berlin(2026, 11, 25, 9, 20)),
        Event("resolved", berlin(2026, 11, 25, 11, 0)),
    ]
    state = evaluate(events, policy, OFFICE)
    assert state.status == "resolved"
    assert state.resolved_at == berlin(2026, 11, 25, 11, 0)
    assert only(state, "first_response").minutes == 30
    round_one = only(state, "next_response")
    assert (round_one.round, round_one.started_at) == (1, berlin(2026, 11, 25, 9, 0))
    assert round_one.minutes == 20
    resolution = only(state, "resolution")
    assert resolution.minutes == 60 + 120  # Monday 09:00-10:00, Wednesday 09:00-11:00
    assert resolution.due_at is None  # resolved for good after 180 minutes
    assert resolution.deadline == berlin(2026, 11, 25, 17, 0)  # 60 Monday, 420 Wednesday
    assert not resolution.breached
    reopened = evaluate([*events, Event("reopened", berlin(2026, 11, 26, 9, 0))], policy, OFFICE)
    assert reopened.status == "open"
    assert reopened.resolved_at is None
    assert only(reopened, "resolution").done_at is None
    assert only(reopened, "next_response").round == 2


def test_pause_while_waiting_on_the_customer() -> None:
    waiting = Policy(
        name="w", next_response=60, resolution=480, warn=None, pause_while_waiting=True
    )
    events = [
        Event("opened", berlin(2026, 11, 23, 9, 0)),
        Event("response", berlin(2026, 11, 23, 9, 10)),
        Event("customer", berlin(2026, 11, 24, 11, 0)),
        Event("response", berlin(2026, 11, 24, 11, 30)),
    ]
    state = evaluate(events, waiting, OFFICE)
    assert state.status == "paused"
    assert only(state, "next_response").minutes == 30
    assert only(state, "resolution").due_at is None  # 40 minutes counted, then we wait
    running = evaluate(events, waiting.model_copy(update={"pause_while_waiting": False}), OFFICE)
    assert running.status == "open"
    assert only(running, "resolution").due_at == berlin(2026, 11, 23, 18, 0)


def test_resolved_before_the_due_time_never_breaches() -> None:
    policy = Policy(name="p", first_response=60, resolution=240, warn=None)
    events = [
        Event("opened", berlin(2026, 11, 23, 9, 0)),
        Event("resolved", berlin(2026, 11, 23, 9, 30)),
    ]
    state = evaluate(events, policy, OFFICE)
    first = only(state, "first_response")
    assert first.due_at is None
    assert not first.breached
    assert not first.breached_by(berlin(2027, 1, 1))
    assert only(state, "resolution").minutes == 30
    strict = Policy(name="strict", first_response=20, resolution=240, warn=None)
    late = only(evaluate(events, strict, OFFICE), "first_response")
    assert late.due_at == berlin(2026, 11, 23, 9, 20)
    assert late.breached


def test_a_warning_without_percent_or_lead_never_warns() -> None:
    policy = Policy(name="p", first_response=60, warn=Warning(at_percent=None))
    state = evaluate([Event("opened", berlin(2026, 11, 23, 9, 0))], policy, OFFICE)
    assert only(state, "first_response").warn_at is None
    assert only(state, "first_response").due_at == berlin(2026, 11, 23, 10, 0)


def test_no_customer_message_no_clock() -> None:
    state = evaluate([Event("response", berlin(2026, 11, 23, 9, 0))], FIRST_HOUR, OFFICE)
    assert state == ClockState("open", None, None, None, None)


def test_a_met_targets_deadline_ignores_stops_after_it_was_met() -> None:
    events = [
        Event("opened", berlin(2026, 11, 23, 9, 0)),
        Event("response", berlin(2026, 11, 23, 9, 20)),
        Event("paused", berlin(2026, 11, 23, 9, 30)),
        Event("resumed", berlin(2026, 11, 25, 9, 0)),
    ]
    first = only(evaluate(events, FIRST_HOUR, OFFICE), "first_response")
    assert first.due_at == berlin(2026, 11, 25, 9, 30)  # the pause still moves the due time
    assert first.deadline == berlin(2026, 11, 23, 10, 0)  # but not the one it was met by
    assert first.minutes == 20
    assert not first.breached
