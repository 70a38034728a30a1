"""Business calendars: opening hours, holidays and business-time arithmetic."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, date, datetime, timedelta
from itertools import islice
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

from .clock import utc
from .errors import ConfigError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
_US_PER_MINUTE = 60_000_000
_US_PER_DAY = MINUTES_PER_DAY * _US_PER_MINUTE
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_MAX_CLOSED_DAYS = 3660  # ten years without an open minute means the calendar never opens
_MAX_CACHED_YEARS = 64
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


class _Day(NamedTuple):
    """One local day: where it begins, its open intervals and their total (UTC microseconds)."""

    begins: int
    intervals: tuple[tuple[int, int], ...]
    open_us: int


class _Year(NamedTuple):
    first_ordinal: int
    days: list[_Day]


def _to_us(value: datetime) -> int:
    return (utc(value) - _EPOCH) // _ONE_US


def _from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class BusinessCalendar:
    """Opening hours in one time zone; all arithmetic walks day by day over open intervals."""

    def __init__(
        self,
        zone: ZoneInfo,
        weekly: WeeklyWindows = ((),) * 7,
        *,
        always_open: bool = False,
        holiday_dates: Callable[[int], set[date]] | None = None,
    ) -> None:
        self.zone = zone
        self.weekly = weekly
        self.always_open = always_open
        self._holiday_dates = holiday_dates or (lambda year: set())
        self._holidays_by_year: dict[int, frozenset[date]] = {}
        self._years: dict[int, _Year] = {}

    @classmethod
    def from_config(cls, config: CalendarConfig) -> BusinessCalendar:
        """Build the calendar a validated CalendarConfig describes."""
        rules = config.holidays
        closures = [parse_closure(text) for text in rules.dates]
        dated = {closure for closure in closures if isinstance(closure, date)}
        recurring = {closure for closure in closures if isinstance(closure, tuple)}

        def holiday_dates(year: int) -> set[date]:
            days = {day for day in dated if day.year == year}
            for month, day in recurring:
                with suppress(ValueError):  # 02-29 outside leap years
                    days.add(date(year, month, day))
            if rules.country is not None:
                days.update(
                    public_holidays.country_holidays(
                        rules.country, subdiv=rules.subdivision, years=year
                    ).keys()
                )
            return days

        return cls(
            ZoneInfo(config.timezone),
            weekly_windows(config.hours),
            always_open=config.always_open,
            holiday_dates=holiday_dates,
        )

    @property
    def timezone_name(self) -> str:
        """The IANA name of the calendar's zone."""
        return self.zone.key

    def is_holiday(self, day: date) -> bool:
        """Whether the local day is closed as a whole (public holiday or company closure)."""
        return day in self._holidays(day.year)

    def is_open(self, t: datetime) -> bool:
        """Whether the instant falls inside opening hours."""
        if self.always_open:
            return True
        at = _to_us(t)
        for day in islice(self._days_from(self._local_ordinal(t) - 1), 3):
            if any(start <= at < end for start, end in day.intervals):
                return True
        return False

    def next_open(self, t: datetime) -> datetime:
        """The first open instant at or after t, in UTC."""
        return self.add(t, 0)

    def add(self, start: datetime, minutes: float) -> datetime:
        """The UTC instant at which `minutes` business minutes have elapsed after start."""
        if not math.isfinite(minutes) or minutes < 0:
            raise ValueError(f"business minutes must be finite and not negative, not {minutes}")
        at = _to_us(start)
        need = round(minutes * _US_PER_MINUTE)
        if self.always_open:
            return _from_us(at + need)
        closed_days = 0
        for day in self._days_from(self._local_ordinal(start) - 1):
            intervals = day.intervals
            if not intervals or intervals[-1][1] <= at:
                closed_days += 1
                if closed_days > _MAX_CLOSED_DAYS:
                    raise ConfigError(f"calendar ({self.zone.key}) has no open hour in ten years")
                continue
            closed_days = 0
            if intervals[0][0] >= at and need > day.open_us:
                need -= day.open_us
                continue
            for opens, closes in intervals:
                if closes <= at:
                    continue
                begin = max(opens, at)
                if need <= closes - begin:
                    return _from_us(begin + need)
                need -= closes - begin
        raise AssertionError("unreachable: the day walk is endless")

    def between(self, a: datetime, b: datetime) -> float:
        """Business minutes in [a, b); zero when b is not after a."""
        low, high = _to_us(a), _to_us(b)
        if high <= low:
            return 0.0
        if self.always_open:
            return (high - low) / _US_PER_MINUTE
        total = 0
        for day in self._days_from(self._local_ordinal(a) - 1):
            if day.begins >= high:
                break
            intervals = day.intervals
            if not intervals:
                continue
            if intervals[0][0] >= low and intervals[-1][1] <= high:
                total += day.open_us
                continue
            for opens, closes in intervals:
                overlap = min(closes, high) - max(opens, low)
                if overlap > 0:
                    total += overlap
        return total / _US_PER_MINUTE

    def _local_ordinal(self, t: datetime) -> int:
        return utc(t).astimezone(self.zone).toordinal()

    def _days_from(self, ordinal: int) -> Iterator[_Day]:
        year = date.fromordinal(ordinal).year
        table = self._year(year)
        yield from islice(table.days, ordinal - table.first_ordinal, None)
        while True:
            year += 1
            yield from self._year(year).days

    def _holidays(self, year: int) -> frozenset[date]:
        found = self._holidays_by_year.get(year)
        if found is None:
            if len(self._holidays_by_year) >= _MAX_CACHED_YEARS:
                self._holidays_by_year.clear()
            found = self._holidays_by_year[year] = frozenset(self._holiday_dates(year))
        return found

    def _year(self, year: int) -> _Year:
        table = self._years.get(year)
        if table is None:
            if len(self._years) >= _MAX_CACHED_YEARS:
                self._years.clear()
            table = self._years[year] = self._build_year(year)
        return table

    def _build_year(self, year: int) -> _Year:
        closed = {day.toordinal() for day in self._holidays(year)}
        first, after = date(year, 1, 1).toordinal(), date(year + 1, 1, 1).toordinal()
        days: list[_Day] = []
        begins = self._wall_to_us(first, 0)
        for ordinal in range(first, after):
            ends = self._wall_to_us(ordinal + 1, 0)
            windows = () if ordinal in closed else self.weekly[(ordinal + 6) % 7]
            if ends - begins == _US_PER_DAY:  # no offset change inside this day
                bounds = [
                    (begins + w.start * _US_PER_MINUTE, begins + w.end * _US_PER_MINUTE)
                    for w in windows
                ]
            else:
                bounds = [
                    (self._wall_to_us(ordinal, w.start), self._wall_to_us(ordinal, w.end))
                    for w in windows
                ]
            intervals = tuple((opens, closes) for opens, closes in bounds if closes > opens)
            days.append(_Day(begins, intervals, sum(c - o for o, c in intervals)))
            begins = ends
        return _Year(first, days)

    def _wall_to_us(self, ordinal: int, minute: int) -> int:
        """A local wall time as UTC microseconds; repeated: first occurrence; skipped: the jump."""
        # A repeated wall time (fall back) takes fold=0. A skipped one (spring forward) maps to
        # the instant the clocks jump, so a window is open exactly while its wall times show.
        wall = datetime.fromordinal(ordinal) + timedelta(minutes=minute)
        first = wall.replace(tzinfo=self.zone).astimezone(UTC)
        if first.astimezone(self.zone).replace(tzinfo=None) == wall:
            return (first - _EPOCH) // _ONE_US
        # In a gap: fold=1 reads the wall with the later offset and lands before the jump.
        before = (wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC) - _EPOCH) // _ONE_US
        after = (first - _EPOCH) // _ONE_US
        jumped = first.astimezone(self.zone).utcoffset()
        while after - before > 1_000_000:  # bisect to the second of the jump
            middle = (before + after) // 2
            if _from_us(middle).astimezone(self.zone).utcoffset() == jumped:
                after = middle
            else:
                before = middle
        return after - after % 1_000_000


def due_at(
    calendar: BusinessCalendar | None, start: datetime, minutes: float, business: bool
) -> datetime:
    """When a policy of `minutes` falls due: business minutes on the calendar, else wall clock."""
    if business and calendar is not None:
        return calendar.add(start, minutes)
    if not math.isfinite(minutes) or minutes < 0:
        raise ValueError(f"minutes must be finite and not negative, not {minutes}")
    return utc(start) + timedelta(minutes=minutes)


_EN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EN_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
)  # fmt: skip
_DE_DAYS = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")
_DE_MONTHS = (
    "Januar", "Februar", "März", "April", "Mai", "Juni", "Juli",
    "August", "September", "Oktober", "November", "Dezember",
)  # fmt: skip
_ZH_DAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")


def describe(t: datetime, calendar: BusinessCalendar | None, language: str = "en") -> str:
    """A short phrase for an instant in the calendar's zone, or UTC without one (en, de, zh)."""
    zone = calendar.zone if calendar is not None else ZoneInfo("UTC")
    local = utc(t).astimezone(zone)
    weekday, clock_time = local.weekday(), f"{local:%H:%M}"
    primary = language.replace("_", "-").split("-")[0].lower()
    if primary == "zh":
        return f"{local.month}月{local.day}日（{_ZH_DAYS[weekday]}）{clock_time}（{zone.key}）"
    if primary == "de":
        month = _DE_MONTHS[local.month - 1]
        return f"{_DE_DAYS[weekday]}, {local.day}. {month}, {clock_time} ({zone.key})"
    month = _EN_MONTHS[local.month - 1]
    return f"{_EN_DAYS[weekday]} {local.day} {month}, {clock_time} ({zone.key})"
