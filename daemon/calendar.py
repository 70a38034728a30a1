"""Business calendars: business-time arithmetic over opening hours and holidays; due times."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import NamedTuple
from zoneinfo import ZoneInfo

import holidays as public_holidays

from .calendar_config import (
    MINUTES_PER_DAY,
    CalendarConfig,
    WeeklyWindows,
    parse_closure,
    weekly_windows,
)
from .clock import utc
from .errors import ConfigError

_US_PER_MINUTE = 60_000_000
_US_PER_DAY = MINUTES_PER_DAY * _US_PER_MINUTE
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_MAX_CLOSED_DAYS = 3660  # ten years without an open minute means the calendar never opens
_MAX_CACHED_YEARS = 64


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
