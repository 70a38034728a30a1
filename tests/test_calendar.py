"""Business calendars: config validation, business-time arithmetic against a minute walk."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from daemon.calendar import BusinessCalendar, describe, due_at
from daemon.calendar_config import CalendarConfig, OpeningWindow, weekly_windows
from daemon.configfile import load_yaml, validate
from daemon.errors import ConfigError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)

OFFICE = {
    "timezone": "Europe/Berlin",
    "hours": {
        "mon-fri": ["09:00-12:30", "13:30-18:00"],
        "sat": ["10:00-14:00"],
        # Both DST Sundays put 02:30 and 02:45 into the skipped or the repeated hour.
        "sun": ["00:00-02:30", "02:45-04:00", "22:00-24:00"],
    },
    "holidays": {"country": "DE", "subdivision": "BE", "dates": ["2026-12-24", "12-31"]},
}
NIGHTS = {
    "timezone": "America/New_York",
    "hours": {
        "mon-sat": ["00:00-06:00", "18:00-24:00"],
        "sun": ["01:30-02:30", "03:00-24:00"],
    },
    "holidays": {"country": "US", "dates": ["07-03"]},
}
ROUND_THE_CLOCK = {"timezone": "Europe/Berlin", "hours": {"mon-sun": ["00:00-24:00"]}}
SHANGHAI = {
    "timezone": "Asia/Shanghai",
    "hours": {"sun-thu": ["08:30-17:30"]},
    "holidays": {"dates": ["10-01", "10-02", "2026-09-30"]},
}
# Santiago changes its clocks at midnight: days begin at 01:00, or 23:00 repeats.
SANTIAGO = {
    "timezone": "America/Santiago",
    "hours": {"mon-sun": ["00:00-02:00", "09:00-17:00", "22:00-24:00"]},
}
ALWAYS = {"timezone": "UTC", "always_open": True}
CALENDARS: dict[str, dict[str, Any]] = {
    "office": OFFICE,
    "nights": NIGHTS,
    "round_the_clock": ROUND_THE_CLOCK,
    "shanghai": SHANGHAI,
    "santiago": SANTIAGO,
    "always": ALWAYS,
}
# DST changes in Europe, the US and Chile, Christmas, Thanksgiving, New Year, China's national day.
ANCHORS = [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
    datetime(2026, 12, 24, 12, 0, tzinfo=UTC),
    datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
    datetime(2026, 9, 30, 0, 0, tzinfo=UTC),
    datetime(2026, 4, 5, 3, 0, tzinfo=UTC),
    datetime(2026, 9, 6, 4, 0, tzinfo=UTC),
]
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def calendar(spec: dict[str, Any]) -> BusinessCalendar:
    return BusinessCalendar.from_config(CalendarConfig.model_validate(spec))


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


# --- the slow reference: walk minute by minute, deciding each minute from local time --------


def ref_minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def ref_week(hours: dict[str, list[str]]) -> dict[int, list[tuple[int, int]]]:
    week: dict[int, list[tuple[int, int]]] = {}
    for key, windows in hours.items():
        first, _, last = key.partition("-")
        start = WEEKDAY_NAMES.index(first)
        stop = WEEKDAY_NAMES.index(last or first)
        for step in range((stop - start) % 7 + 1):
            week[(start + step) % 7] = [
                (ref_minutes(w.split("-")[0]), ref_minutes(w.split("-")[1])) for w in windows
            ]
    return week


def ref_wall_to_utc(zone: ZoneInfo, day: date, minute: int) -> datetime:
    """A wall time as an instant; a skipped wall time steps on to the first one that exists."""
    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
    while True:
        instant = wall.replace(tzinfo=zone).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            return instant
        wall += MINUTE


@dataclass
class Reference:
    """Decides every minute on its own: in a window of its local day (or a neighbour's)."""

    spec: dict[str, Any]
    zone: ZoneInfo = field(init=False)
    week: dict[int, list[tuple[int, int]]] = field(init=False)
    cache: dict[date, list[tuple[datetime, datetime]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.spec["timezone"])
        self.week = ref_week(self.spec.get("hours", {}))

    def closed_day(self, day: date) -> bool:
        rules = self.spec.get("holidays", {})
        if rules.get("country") and day in holidays.country_holidays(
            rules["country"], subdiv=rules.get("subdivision"), years=day.year
        ):
            return True
        texts = rules.get("dates", [])
        return day.isoformat() in texts or day.isoformat()[5:] in texts

    def windows(self, day: date) -> list[tuple[datetime, datetime]]:
        if day not in self.cache:
            spans = [] if self.closed_day(day) else self.week.get(day.weekday(), [])
            self.cache[day] = [
                (ref_wall_to_utc(self.zone, day, s), ref_wall_to_utc(self.zone, day, e))
                for s, e in spans
            ]
        return self.cache[day]

    def open_minute(self, instant: datetime) -> bool:
        if self.spec.get("always_open"):
            return True
        day = instant.astimezone(self.zone).date()
        return any(
            opens <= instant < closes
            for near in (day - timedelta(days=1), day, day + timedelta(days=1))
            for opens, closes in self.windows(near)
        )

    def between(self, a: datetime, b: datetime) -> float:
        count, instant = 0, a
        while instant < b:
            count += self.open_minute(instant)
            instant += MINUTE
        return float(count)

    def add(self, a: datetime, minutes: int) -> datetime:
        instant = a
        while not self.open_minute(instant):
            instant += MINUTE
        while minutes > 0:  # ends right after the last minute counted, even at a closing
            minutes -= self.open_minute(instant)
            instant += MINUTE
        return instant


# --- properties --------------------------------------------------------------------------------

names = st.sampled_from(sorted(CALENDARS))
instants = st.builds(
    lambda anchor, offset: anchor + offset * MINUTE,
    st.sampled_from(ANCHORS),
    st.integers(-3 * 1440, 3 * 1440),
)
fine_instants = st.builds(
    lambda anchor, offset: anchor + timedelta(microseconds=offset),
    st.sampled_from(ANCHORS),
    st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000),
)
BUILT = {name: calendar(spec) for name, spec in CALENDARS.items()}


@settings(max_examples=250, deadline=None)
@given(name=names, a=instants, span=st.integers(0, 6 * 1440))
def test_between_matches_the_minute_walk(name: str, a: datetime, span: int) -> None:
    b = a + span * MINUTE
    assert BUILT[name].between(a, b) == Reference(CALENDARS[name]).between(a, b)


@settings(max_examples=250, deadline=None)
@given(name=names, a=instants, minutes=st.integers(0, 1800))
def test_add_matches_the_minute_walk(name: str, a: datetime, minutes: int) -> None:
    due = BUILT[name].add(a, minutes)
    assert due == Reference(CALENDARS[name]).add(a, minutes)
    assert due.tzinfo is UTC


@settings(max_examples=300, deadline=None)
@given(name=names, a=instants)
def test_is_open_matches_the_minute_walk(name: str, a: datetime) -> None:
    assert BUILT[name].is_open(a) == Reference(CALENDARS[name]).open_minute(a)


@settings(max_examples=200, deadline=None)
@given(name=names, a=fine_instants, seconds=st.integers(0, 5 * 86_400))
def test_between_undoes_add(name: str, a: datetime, seconds: int) -> None:
    cal = BUILT[name]
    start = cal.next_open(a)
    assert cal.is_open(start)
    assert cal.between(a, start) == 0
    assert math.isclose(
        cal.between(start, cal.add(start, seconds / 60)), seconds / 60, abs_tol=1e-9
    )
    assert math.isclose(cal.between(a, cal.add(a, seconds / 60)), seconds / 60, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    name=names, a=fine_instants, later=fine_instants, m=st.floats(0, 5000), more=st.floats(0, 99)
)
def test_add_is_monotonic(name: str, a: datetime, later: datetime, m: float, more: float) -> None:
    cal = BUILT[name]
    assert cal.add(a, m) <= cal.add(a, m + more)
    first, second = sorted([a, later])
    assert cal.add(first, m) <= cal.add(second, m)


@settings(max_examples=200, deadline=None)
@given(name=names, points=st.lists(fine_instants, min_size=3, max_size=3))
def test_between_is_additive(name: str, points: list[datetime]) -> None:
    cal = BUILT[name]
    a, b, c = sorted(points)
    assert math.isclose(cal.between(a, b) + cal.between(b, c), cal.between(a, c), abs_tol=1e-9)
    assert cal.between(c, a) == 0.0


# --- daylight saving ---------------------------------------------------------------------------


def test_spring_forward_window_is_two_hours_and_fall_back_four() -> None:
    cal = calendar({"timezone": "Europe/Berlin", "hours": {"sun": ["01:00-04:00"]}})
    assert cal.between(local(2026, 3, 29), local(2026, 3, 30)) == 120
    assert cal.between(local(2026, 10, 25), local(2026, 10, 26)) == 240
    assert cal.between(local(2026, 3, 22), local(2026, 3, 23)) == 180
    assert cal.add(local(2026, 3, 29), 90) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_window_edge_in_the_skipped_hour_moves_to_the_jump() -> None:
    cal = calendar({"timezone": "Europe/Berlin", "hours": {"sun": ["02:30-05:00"]}})
    # 02:30 never happens on 29 March: the office opens when the clocks jump to 03:00 CEST.
    assert cal.next_open(local(2026, 3, 29)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert cal.between(local(2026, 3, 29), local(2026, 3, 30)) == 120
    assert not cal.is_open(datetime(2026, 3, 29, 0, 59, tzinfo=UTC))


def test_window_edge_in_the_repeated_hour_takes_the_first_occurrence() -> None:
    cal = calendar({"timezone": "Europe/Berlin", "hours": {"sun": ["02:30-04:00"]}})
    # From the first 02:30 (CEST, 00:30 UTC) to 04:00 CET (03:00 UTC).
    assert cal.next_open(local(2026, 10, 25)) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert cal.between(local(2026, 10, 25), local(2026, 10, 26)) == 150
    ends_early = calendar({"timezone": "Europe/Berlin", "hours": {"sun": ["01:00-02:30"]}})
    assert ends_early.between(local(2026, 10, 25), local(2026, 10, 26)) == 90
    assert ends_early.add(local(2026, 10, 25), 90) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_new_york_dst_days() -> None:
    cal = calendar({"timezone": "America/New_York", "hours": {"sun": ["00:00-24:00"]}})
    day = timedelta(days=1)
    spring = datetime(2026, 3, 8, tzinfo=NEW_YORK)
    fall = datetime(2026, 11, 1, tzinfo=NEW_YORK)
    assert cal.between(spring, spring + day) == 23 * 60
    assert cal.between(fall, fall + day) == 25 * 60
    assert cal.add(spring, 23 * 60) == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)


# --- nights, weekends, lunch breaks, holidays --------------------------------------------------

WEEKDAYS_9_TO_5 = {"timezone": "Europe/Berlin", "hours": {"mon-fri": ["09:00-17:00"]}}


def test_pause_spans_the_night_and_the_weekend() -> None:
    cal = calendar(WEEKDAYS_9_TO_5)
    friday = local(2026, 11, 20, 16, 0)
    assert cal.add(friday, 120) == local(2026, 11, 23, 10, 0)
    assert cal.between(local(2026, 11, 20, 16, 30), local(2026, 11, 23, 9, 30)) == 60
    assert cal.add(local(2026, 11, 18, 16, 0), 60) == local(2026, 11, 18, 17, 0)
    assert cal.next_open(local(2026, 11, 21, 12, 0)) == local(2026, 11, 23, 9, 0)
    assert cal.add(local(2026, 11, 21, 12, 0), 0) == local(2026, 11, 23, 9, 0)
    assert cal.next_open(local(2026, 11, 23, 9, 30)) == local(2026, 11, 23, 9, 30)


def test_lunch_break_is_not_counted() -> None:
    cal = calendar(OFFICE)
    monday_noon = local(2026, 11, 23, 12, 0)
    assert cal.add(monday_noon, 60) == local(2026, 11, 23, 14, 0)
    assert not cal.is_open(local(2026, 11, 23, 13, 0))
    assert cal.is_open(local(2026, 11, 23, 13, 30))
    assert cal.between(local(2026, 11, 23), local(2026, 11, 24)) == 8 * 60


def test_results_are_utc_whatever_the_input_zone() -> None:
    cal = calendar(WEEKDAYS_9_TO_5)
    start = datetime(2026, 11, 23, 3, 0, tzinfo=NEW_YORK)  # 09:00 in Berlin
    due = cal.add(start, 30)
    assert due.tzinfo is UTC
    assert due == local(2026, 11, 23, 9, 30)
    assert cal.between(start, due) == 30
    naive_utc = datetime(2026, 11, 23, 8, 0)  # taken as UTC, like daemon.clock.utc
    assert cal.add(naive_utc, 0) == local(2026, 11, 23, 9, 0)


def test_country_holidays_close_the_whole_day() -> None:
    cal = calendar(
        {
            "timezone": "Europe/Berlin",
            "hours": {"mon-sun": ["09:00-17:00"]},
            "holidays": {"country": "DE"},
        }
    )
    assert cal.is_holiday(date(2026, 12, 25))
    assert not cal.is_open(local(2026, 12, 25, 12, 0))
    assert not cal.is_open(local(2026, 10, 3, 12, 0))
    assert cal.is_open(local(2026, 10, 2, 12, 0))
    assert cal.next_open(local(2026, 12, 24, 18, 0)) == local(2026, 12, 27, 9, 0)
    assert cal.between(local(2026, 12, 24), local(2026, 12, 28)) == 2 * 8 * 60


def test_subdivision_holidays() -> None:
    hours = {"mon-fri": ["09:00-17:00"]}
    berlin = calendar({"timezone": "Europe/Berlin", "hours": hours, "holidays": {"country": "DE"}})
    with_state = calendar(
        {
            "timezone": "Europe/Berlin",
            "hours": hours,
            "holidays": {"country": "DE", "subdivision": "BE"},
        }
    )
    womens_day = local(2027, 3, 8, 12, 0)  # a public holiday in Berlin only
    assert berlin.is_open(womens_day)
    assert not with_state.is_open(womens_day)


def test_dated_and_recurring_closures() -> None:
    cal = calendar({**WEEKDAYS_9_TO_5, "holidays": {"dates": ["2026-12-24", "12-31", "02-29"]}})
    assert not cal.is_open(local(2026, 12, 24, 12, 0))
    assert cal.is_open(local(2027, 12, 24, 12, 0))
    assert not cal.is_open(local(2026, 12, 31, 12, 0))
    assert not cal.is_open(local(2027, 12, 31, 12, 0))
    assert not cal.is_open(local(2028, 2, 29, 12, 0))
    assert cal.is_open(local(2027, 3, 1, 12, 0))


def test_always_open_counts_wall_clock_minutes() -> None:
    cal = calendar(ALWAYS)
    spring = local(2026, 3, 29)
    # Aware datetime + timedelta is wall-clock arithmetic: 00:00 to 05:00 that night is 4 hours.
    assert cal.between(spring, spring + timedelta(hours=5)) == 240
    assert cal.add(spring, 90.5) == spring.astimezone(UTC) + timedelta(minutes=90.5)
    assert cal.is_open(spring)
    assert cal.next_open(spring) == spring


def test_long_spans_and_year_ends() -> None:
    cal = calendar(OFFICE)
    start = local(2026, 6, 1, 10, 0)
    year_later = local(2027, 6, 1, 10, 0)
    assert cal.add(start, cal.between(start, year_later)) == year_later
    assert cal.between(local(2026, 12, 31, 23), local(2027, 1, 4)) == Reference(OFFICE).between(
        local(2026, 12, 31, 23), local(2027, 1, 4)
    )


def test_negative_minutes_are_refused() -> None:
    cal = calendar(WEEKDAYS_9_TO_5)
    with pytest.raises(ValueError, match="not negative"):
        cal.add(local(2026, 11, 23), -1)
    with pytest.raises(ValueError, match="finite"):
        cal.add(local(2026, 11, 23), math.nan)


def test_a_calendar_closed_forever_says_so() -> None:
    every_day = [f"{month:02d}-{day:02d}" for month in range(1, 13) for day in range(1, 32)]
    valid = [text for text in every_day if _is_date(f"2000-{text}")]
    cal = calendar({**WEEKDAYS_9_TO_5, "holidays": {"dates": valid}})
    with pytest.raises(ConfigError, match="no open hour"):
        cal.next_open(local(2026, 1, 1))


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


# --- due_at and describe -----------------------------------------------------------------------


def test_due_at_in_business_or_wall_clock_minutes() -> None:
    cal = calendar(WEEKDAYS_9_TO_5)
    friday = local(2026, 11, 20, 16, 0)
    assert due_at(cal, friday, 120, business=True) == local(2026, 11, 23, 10, 0)
    assert due_at(cal, friday, 120, business=False) == local(2026, 11, 20, 18, 0)
    assert due_at(None, friday, 120, business=True) == local(2026, 11, 20, 18, 0)
    assert due_at(None, friday, 1, business=False).tzinfo is UTC


@pytest.mark.parametrize(
    ("language", "zone", "expected"),
    [
        ("en", "Europe/Berlin", "Monday 24 November, 10:00 (Europe/Berlin)"),
        ("de-DE", "Europe/Berlin", "Montag, 24. November, 10:00 (Europe/Berlin)"),
        ("zh", "Asia/Shanghai", "11月24日（星期一）17:00（Asia/Shanghai）"),
        ("zh_CN", "Asia/Shanghai", "11月24日（星期一）17:00（Asia/Shanghai）"),
        ("pt", "UTC", "Monday 24 November, 09:00 (UTC)"),
    ],
)
def test_describe(language: str, zone: str, expected: str) -> None:
    cal = calendar({"timezone": zone, "always_open": True})
    assert describe(datetime(2025, 11, 24, 9, 0, tzinfo=UTC), cal, language) == expected


def test_describe_without_calendar_is_utc() -> None:
    assert describe(local(2025, 11, 24, 10, 0), None, "en") == "Monday 24 November, 09:00 (UTC)"


# --- configuration -----------------------------------------------------------------------------


def test_weekday_shorthands_and_merging() -> None:
    week = weekly_windows({"mon-wed": ["13:00-14:00", "09:00-13:00"], "fri-sun": ["20:00-24:00"]})
    assert week[0] == week[2] == (OpeningWindow(9 * 60, 14 * 60),)
    assert week[3] == ()
    assert week[4] == week[5] == week[6] == (OpeningWindow(20 * 60, 24 * 60),)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"timezone": "Europe/Berln", "always_open": True}, "did you mean Europe/Berlin"),
        ({"timezone": "Mars/Olympus", "always_open": True}, "unknown time zone 'Mars/Olympus'"),
        ({"timezone": "../etc/passwd", "always_open": True}, "unknown time zone"),
        ({"timezone": "UTC", "hours": {"mon": ["09:00-13:00", "12:00-17:00"]}}, "overlap"),
        ({"timezone": "UTC", "hours": {"mon": ["18:00-09:00"]}}, "may not cross midnight"),
        ({"timezone": "UTC", "hours": {"mon": ["09:00-09:00"]}}, "empty"),
        ({"timezone": "UTC", "hours": {"mon": ["09:00-24:01"]}}, "not a time of day"),
        ({"timezone": "UTC", "hours": {"mon": ["09:60-10:00"]}}, "not a time of day"),
        ({"timezone": "UTC", "hours": {"mon": ["24:00-24:00"]}}, "starts at 24:00"),
        ({"timezone": "UTC", "hours": {"mon": ["9-17"]}}, "HH:MM-HH:MM"),
        ({"timezone": "UTC", "hours": {"monday": ["09:00-17:00"]}}, "unknown weekday 'monday'"),
        ({"timezone": "UTC", "hours": {"mon-fri": [], "tue": []}}, "tue is given twice"),
        ({"timezone": "UTC", "hours": {"sat": []}}, "no opening hours"),
        ({"timezone": "UTC"}, "no opening hours"),
        ({"timezone": "UTC", "always_open": True, "hours": {"mon": []}}, "24/7"),
        ({"timezone": "UTC", "hours": {"mon": ["09:00-17:00"]}, "x": 1}, "Extra inputs"),
        (
            {"timezone": "UTC", "hours": {"mon": ["09:00-17:00"]}, "holidays": {"country": "XX"}},
            "unknown country code 'XX'",
        ),
        (
            {
                "timezone": "UTC",
                "hours": {"mon": ["09:00-17:00"]},
                "holidays": {"country": "DE", "subdivision": "ZZ"},
            },
            "no subdivision 'ZZ'; known: BB, BE",
        ),
        (
            {
                "timezone": "UTC",
                "hours": {"mon": ["09:00-17:00"]},
                "holidays": {"subdivision": "BE"},
            },
            "needs a country",
        ),
        (
            {
                "timezone": "UTC",
                "hours": {"mon": ["09:00-17:00"]},
                "holidays": {"dates": ["02-30"]},
            },
            "'02-30' is not a date",
        ),
        (
            {
                "timezone": "UTC",
                "hours": {"mon": ["09:00-17:00"]},
                "holidays": {"dates": ["24.12."]},
            },
            "neither YYYY-MM-DD",
        ),
    ],
)
def test_validation_errors_are_clear(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CalendarConfig.model_validate(spec)


def test_24_00_ends_a_window() -> None:
    cal = calendar({"timezone": "UTC", "hours": {"mon": ["22:00-24:00"], "tue": ["00:00-01:00"]}})
    monday = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    assert cal.add(monday, 90) == datetime(2026, 11, 24, 0, 30, tzinfo=UTC)


class _RulesDocument(BaseModel):
    calendars: dict[str, CalendarConfig]


def test_yaml_calendars_validate_and_errors_name_the_line() -> None:
    text = (
        "calendars:\n"
        "  office:\n"
        "    timezone: Europe/Berlin\n"
        "    hours:\n"
        '      mon-fri: ["09:00-12:30", "13:30-18:00"]\n'
        "    holidays:\n"
        "      country: DE\n"
        "      dates: [2026-12-24, 12-31]\n"
        "  always:\n"
        "    timezone: UTC\n"
        "    always_open: true\n"
    )
    document = validate(load_yaml(Path("rules.yaml"), text), _RulesDocument)
    office = document.calendars["office"]
    assert office.holidays.dates == ("2026-12-24", "12-31")
    assert not BusinessCalendar.from_config(office).is_open(local(2026, 12, 24, 10, 0))
    overlapping = text.replace("13:30-18:00", "12:00-18:00")
    with pytest.raises(
        ConfigError, match=r"rules.yaml:5:7: calendars.office.hours.mon-fri: .*overlap"
    ):
        validate(load_yaml(Path("rules.yaml"), overlapping), _RulesDocument)
    bad_date = text.replace("12-31", "12-32")
    with pytest.raises(ConfigError, match=r"rules.yaml:8:\d+: calendars.office.holidays.dates.1: "):
        validate(load_yaml(Path("rules.yaml"), bad_date), _RulesDocument)
