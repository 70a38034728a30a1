"""Business calendar settings in rules.yaml: weekly opening windows, closed days and holidays."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Annotated, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import holidays as public_holidays
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    field_validator,
    model_validator,
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
_WINDOW_TEXT = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DATED = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_RECURRING = re.compile(r"^(\d{2})-(\d{2})$")


class OpeningWindow(NamedTuple):
    """One opening window of a weekday, in minutes after local midnight: [start, end)."""

    start: int
    end: int


WeeklyWindows = tuple[tuple[OpeningWindow, ...], ...]


def _clock_minutes(hour: str, minute: str, text: str) -> int:
    value = int(hour) * 60 + int(minute)
    if int(minute) > 59 or value > MINUTES_PER_DAY:
        raise ValueError(f"window {text!r}: {hour}:{minute} is not a time of day (00:00 to 24:00)")
    return value


def parse_window(text: str) -> OpeningWindow:
    """Parse "HH:MM-HH:MM" (end may be 24:00); a window may not cross midnight."""
    match = _WINDOW_TEXT.match(text)
    if match is None:
        raise ValueError(f"window {text!r} is not of the form HH:MM-HH:MM, e.g. 09:00-17:30")
    start = _clock_minutes(match[1], match[2], text)
    end = _clock_minutes(match[3], match[4], text)
    if start == MINUTES_PER_DAY:
        raise ValueError(f"window {text!r} starts at 24:00; write 00:00 on the next day")
    if end == start:
        raise ValueError(f"window {text!r} is empty; leave it out to close")
    if end < start:
        raise ValueError(
            f"window {text!r} ends before it starts; a window may not cross midnight, "
            "split it into one ending at 24:00 and one starting at 00:00 the next day"
        )
    return OpeningWindow(start, end)


def _weekdays_of(key: str) -> list[int]:
    names = [part.strip().lower() for part in key.split("-")]
    if len(names) > 2 or any(name not in WEEKDAYS for name in names):
        raise ValueError(
            f"unknown weekday {key!r}: use mon, tue, wed, thu, fri, sat, sun or a range "
            "such as mon-fri"
        )
    first, last = WEEKDAYS.index(names[0]), WEEKDAYS.index(names[-1])
    return [(first + step) % 7 for step in range((last - first) % 7 + 1)]


def day_windows(texts: Sequence[str]) -> tuple[OpeningWindow, ...]:
    """Parse one day's windows, sorted, with touching windows merged; overlaps are errors."""
    merged: list[OpeningWindow] = []
    for window in sorted(parse_window(text) for text in texts):
        if merged and window.start < merged[-1].end:
            raise ValueError(
                f"windows {_window_text(merged[-1])!r} and {_window_text(window)!r} overlap"
            )
        if merged and window.start == merged[-1].end:
            merged[-1] = OpeningWindow(merged[-1].start, window.end)
        else:
            merged.append(window)
    return tuple(merged)


def weekly_windows(hours: Mapping[str, Sequence[str]]) -> WeeklyWindows:
    """Turn the `hours` mapping into windows for Monday (0) to Sunday (6)."""
    week: list[tuple[OpeningWindow, ...]] = [()] * 7
    given_by: dict[int, str] = {}
    for key, texts in hours.items():
        windows = day_windows(texts)
        for weekday in _weekdays_of(key):
            if weekday in given_by:
                raise ValueError(
                    f"{WEEKDAYS[weekday]} is given twice ({given_by[weekday]!r} and {key!r})"
                )
            given_by[weekday] = key
            week[weekday] = windows
    return tuple(week)


def _window_text(window: OpeningWindow) -> str:
    return "{:02d}:{:02d}-{:02d}:{:02d}".format(*divmod(window.start, 60), *divmod(window.end, 60))


def parse_closure(text: str) -> date | tuple[int, int]:
    """Parse a closed day: "YYYY-MM-DD" (one date) or "MM-DD" (every year) as (month, day)."""
    try:
        if dated := _DATED.match(text):
            return date(int(dated[1]), int(dated[2]), int(dated[3]))
        if recurring := _RECURRING.match(text):
            date(2000, int(recurring[1]), int(recurring[2]))  # a leap year admits 02-29
            return (int(recurring[1]), int(recurring[2]))
    except ValueError:
        raise ValueError(f"closed day {text!r} is not a date of the calendar") from None
    raise ValueError(f"closed day {text!r} is neither YYYY-MM-DD (once) nor MM-DD (every year)")


def _checked_by(check: Callable[[Any], object]) -> AfterValidator:
    """A pydantic validator that runs `check` for its errors and keeps the value as written."""

    def keep_if_valid(value: Any) -> Any:
        check(value)
        return value

    return AfterValidator(keep_if_valid)


def _date_as_text(value: object) -> object:
    # YAML reads an unquoted 2026-12-24 as a date; take it as the text the admin wrote.
    return value.isoformat() if isinstance(value, date) else value


# Checked item by item, so that a config error names the line of the very key or item.
WeekdayKey = Annotated[str, _checked_by(_weekdays_of)]
DayHours = Annotated[
    tuple[Annotated[str, _checked_by(parse_window)], ...], _checked_by(day_windows)
]
ClosedDay = Annotated[str, BeforeValidator(_date_as_text), _checked_by(parse_closure)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HolidayConfig(_Strict):
    """Whole local days closed: a country's public holidays and the company's own dates."""

    country: str | None = None
    subdivision: str | None = None
    dates: tuple[ClosedDay, ...] = ()

    @model_validator(mode="after")
    def _country_known(self) -> HolidayConfig:
        if self.country is None:
            if self.subdivision is not None:
                raise ValueError("a holiday subdivision needs a country")
            return self
        try:
            public_holidays.country_holidays(self.country)
        except NotImplementedError:
            raise ValueError(
                f"unknown country code {self.country!r} for holidays: use an ISO 3166 "
                "two-letter code such as DE, US or CN"
            ) from None
        if self.subdivision is not None:
            try:
                public_holidays.country_holidays(self.country, subdiv=self.subdivision)
            except NotImplementedError:
                known = public_holidays.country_holidays(self.country).subdivisions
                raise ValueError(
                    f"country {self.country} has no subdivision {self.subdivision!r}"
                    + (f"; known: {', '.join(known)}" if known else "")
                ) from None
        return self


class CalendarConfig(_Strict):
    """One business calendar in rules.yaml: time zone, weekly hours, closed days or 24/7."""

    timezone: str
    always_open: bool = False
    hours: dict[WeekdayKey, DayHours] = {}
    holidays: HolidayConfig = HolidayConfig()

    @field_validator("timezone")
    @classmethod
    def _zone_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            close = difflib.get_close_matches(value, sorted(available_timezones()), n=1)
            hint = f"did you mean {close[0]}?" if close else "use an IANA name like Europe/Berlin"
            raise ValueError(f"unknown time zone {value!r}; {hint}") from None
        return value

    @field_validator("hours")
    @classmethod
    def _weekdays_once(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        weekly_windows(value)
        return value

    @model_validator(mode="after")
    def _open_sometime(self) -> CalendarConfig:
        if self.always_open:
            if self.hours or self.holidays != HolidayConfig():
                raise ValueError("always_open: true is 24/7 and takes no hours or holidays")
        elif not any(weekly_windows(self.hours)):
            raise ValueError("no opening hours: give hours (e.g. mon-fri) or always_open: true")
        return self
