"""The SLA report: compliance, response and resolution times, breaches and surveys per group.

Business minutes come from the clocks as the SLA module counted them; overdue times of the
waiting conversations are wall-clock minutes.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, case, select

from .clock import utc
from .errors import StorageError
from .tables import Conversation, SlaClock

SLA: Table = SlaClock.__table__  # type: ignore[assignment]
CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
GROUP_COLUMNS = ("department", "urgency", "tier", "policy", "mailbox", "calendar")
# upper edges of the first-response histogram's buckets, in business minutes
HISTOGRAM_EDGES = (15, 30, 60, 120, 240, 480, 960, 1440, 2880)

# The scan packs each conversation's outcome into one integer, so that Python only counts
# distinct values: bits 0-2 the first-response code and bits 3-5 the resolution code (1 done,
# 2 met, 4 breached, added up), bits 6-7 the overall outcome (1 compliant, 2 breached),
# bits 8 and up the next-response breaches. A second integer
# holds the UTC day of opening (days since 1970) times 4, plus the outcome. Timestamps are
# compared in SQL: on SQLite they are fixed-width ISO strings and sort as the instants.
_TARGET = """(CASE WHEN {done} IS NULL THEN 0 ELSE 1 END
  + CASE WHEN {due} IS NULL THEN 0
         WHEN {done} IS NOT NULL THEN CASE WHEN {done} > {due} THEN 4 ELSE 2 END
         WHEN {now} >= {due} THEN 4 ELSE 0 END)"""
_NEXT = """(c.next_response_breaches
  + CASE WHEN c.status <> 'resolved' AND c.waiting_since IS NOT NULL
              AND c.next_response_due <= {now} THEN 1 ELSE 0 END)"""
_OUTCOME = """(CASE WHEN (fr & 4) <> 0 OR (rs & 4) <> 0 OR nr > 0 THEN 2
       WHEN (fr & 2) <> 0 OR (rs & 2) <> 0 THEN 1 ELSE 0 END)"""
_DAY = {
    "sqlite": "CAST(julianday(c.opened_at) - 2440587.5 AS INTEGER)",
    "postgresql": "((c.opened_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01')",
}
# OFFSET 0 keeps both databases from merging the inner query into the outer one, which
# would evaluate the target codes once for each use
_FENCE = {"sqlite": "LIMIT -1 OFFSET 0", "postgresql": "OFFSET 0"}
EPOCH = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class TargetStats:
    """One target (first response or resolution) of a group; done = answered or resolved."""

    done: int
    met: int
    breached: int
    compliance_pct: float | None  # met / (met + breached)
    median_minutes: float | None
    p90_minutes: float | None


@dataclass(frozen=True, slots=True)
class GroupStats:
    """The figures of one group of conversations (key: the values of the `by` columns)."""

    key: tuple[str | None, ...]
    conversations: int
    first_response: TargetStats
    resolution: TargetStats
    next_response_breaches: int
    decided: int  # conversations with at least one met or breached target
    compliant: int  # decided conversations without any breach
    compliance_pct: float | None
    survey_answers: int
    survey_mean_rating: float | None


@dataclass(frozen=True, slots=True)
class Waiting:
    """An open conversation whose customer waits for an answer (overdue: wall-clock minutes)."""

    conversation_id: int
    subject: str
    department: str | None
    urgency: str | None
    waiting_since: datetime
    due: datetime | None
    overdue_minutes: float | None  # negative while not yet due


@dataclass(frozen=True, slots=True)
class Week:
    """Overall compliance of the conversations opened in one ISO week (UTC)."""

    week: str
    conversations: int
    decided: int
    compliant: int
    compliance_pct: float | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bar of the first-response histogram: [from, to) business minutes."""

    from_minutes: float
    to_minutes: float | None
    count: int


@dataclass(frozen=True, slots=True)
class Report:
    """Everything `mailcare sla report` shows."""

    generated_at: datetime
    since: datetime | None
    until: datetime | None
    by: tuple[str, ...]
    groups: tuple[GroupStats, ...]
    total: GroupStats
    worst: tuple[Waiting, ...]
    weeks: tuple[Week, ...]
    histogram: tuple[Bucket, ...]
    ratings: tuple[int, ...]  # survey answers per rating 1..5


def _pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def quantile(parts: Sequence[Sequence[float]], q: float) -> float | None:
    """The q-quantile of the values of sorted lists, linear between the closest ranks."""
    count = sum(len(part) for part in parts)
    if count == 0:
        return None
    position = (count - 1) * q
    low = int(position)
    below = _kth(parts, low)
    if low + 1 >= count:
        return float(below)
    return float(below + (_kth(parts, low + 1) - below) * (position - low))


def _kth(parts: Sequence[Sequence[float]], k: int) -> float:
    """The k-th smallest (from 0) of the values of sorted lists, without merging them."""
    if len(parts) == 1:
        return parts[0][k]
    found: float | None = None
    for part in parts:
        # the first value here with more than k values at or below it
        lo, hi = 0, len(part)
        while lo < hi:
            mid = (lo + hi) // 2
            if sum(bisect.bisect_right(other, part[mid]) for other in parts) > k:
                hi = mid
            else:
                lo = mid + 1
        if lo < len(part) and (found is None or part[lo] < found):
            found = part[lo]
    assert found is not None
    return found


def check_by(by: Sequence[str]) -> tuple[str, ...]:
    """The grouping columns, validated; ValueError names the allowed ones."""
    for column in by:
        if column not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {column!r}: choose from {', '.join(GROUP_COLUMNS)}")
    if len(set(by)) != len(by):
        raise ValueError("a grouping column is given twice")
    return tuple(by)


class _Tally:
    """Counts of one group, added up from packed outcomes (see _TARGET)."""

    def __init__(self) -> None:
        self.conversations = self.decided = self.compliant = self.next_breaches = 0
        self.first = [0, 0, 0]  # done, met, breached
        self.resolution = [0, 0, 0]
        self.ratings = [0] * 6  # index 0 unused

    def add(self, packed: int, count: int) -> None:
        self.conversations += count
        for counts, code in ((self.first, packed & 7), (self.resolution, packed >> 3 & 7)):
            counts[0] += count * (code & 1)
            counts[1] += count * (code >> 1 & 1)
            counts[2] += count * (code >> 2 & 1)
        outcome = packed >> 6 & 3
        self.decided += count * (outcome != 0)
        self.compliant += count * (outcome == 1)
        self.next_breaches += count * (packed >> 8)

    def stats(
        self, key: tuple[Any, ...], first: Sequence[list[float]], res: Sequence[list[float]]
    ) -> GroupStats:
        answers = sum(self.ratings[1:])
        mean = sum(r * n for r, n in enumerate(self.ratings)) / answers if answers else None
        return GroupStats(
            key,
            self.conversations,
            _target(self.first, first),
            _target(self.resolution, res),
            self.next_breaches,
            self.decided,
            self.compliant,
            _pct(self.compliant, self.decided),
            answers,
            mean,
        )


def _target(counts: list[int], ordered: Sequence[Sequence[float]]) -> TargetStats:
    done, met, breached = counts
    return TargetStats(
        done,
        met,
        breached,
        _pct(met, met + breached),
        quantile(ordered, 0.5),
        quantile(ordered, 0.9),
    )


def _iso_week(day: int) -> str:
    year, week, _ = (EPOCH + timedelta(days=day)).isocalendar()
    return f"{year}-W{week:02d}"


def _where(dialect: str, since: bool, until: bool) -> str:
    """The period's condition on the clocks `c` (named parameters since and until)."""
    mark = ":{}" if dialect == "sqlite" else "%({})s"
    where = [f"c.opened_at >= {mark.format('since')}"] if since else []
    if until:
        where.append(f"c.opened_at < {mark.format('until')}")
    return " WHERE " + " AND ".join(where) if where else ""


def _survey_sql(dialect: str, by: tuple[str, ...], since: bool, until: bool) -> str:
    """Survey answers per group and rating (driven from the answers: there are fewer)."""
    keys = "".join(f"c.{column}, " for column in by)
    # SQLite's CROSS JOIN keeps this join order; elsewhere it is a plain inner join
    where = _where(dialect, since, until)
    where = f"{where} AND" if where else " WHERE"
    return (
        f"SELECT {keys}s.rating, COUNT(*) FROM survey_answers s CROSS JOIN sla_clocks c"
        f"{where} c.conversation_id = s.conversation_id AND s.rating BETWEEN 1 AND 5"
        f" GROUP BY {keys}s.rating"
    )


def _scan_sql(dialect: str, by: tuple[str, ...], since: bool, until: bool) -> str:
    """The one scan: by columns, packed outcome, day and outcome, the two minute counts."""
    now = ":now" if dialect == "sqlite" else "%(now)s"
    first = _TARGET.format(done="c.first_response_at", due="c.first_response_due", now=now)
    res = _TARGET.format(done="c.resolved_at", due="c.resolution_due", now=now)
    keys = "".join(f"{column}, " for column in by)
    return (
        f"SELECT {keys}fr + 8 * rs + 64 * {_OUTCOME} + 256 * nr,"
        f" day * 4 + {_OUTCOME}, first_minutes, resolution_minutes FROM ("
        f"SELECT {''.join(f'c.{column}, ' for column in by)}{first} AS fr, {res} AS rs,"
        f" {_NEXT.format(now=now)} AS nr,"
        f" {_DAY.get(dialect, _DAY['postgresql'])} AS day,"
        " c.first_response_minutes AS first_minutes, c.resolution_minutes AS resolution_minutes"
        f" FROM sla_clocks c{_where(dialect, since, until)}"
        f" {_FENCE.get(dialect, _FENCE['postgresql'])}) AS clocks"
    )


def _params(dialect: str, **values: datetime | None) -> dict[str, Any]:
    """Named parameters for the driver: on SQLite the text it stores (naive UTC)."""
    if dialect == "sqlite":
        return {
            name: utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")
            for name, value in values.items()
            if value is not None
        }
    return {name: value for name, value in values.items() if value is not None}


def _raw_rows(conn: Connection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rows as the driver returns them: making a million SQLAlchemy rows costs seconds."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        rows = list(cursor.fetchall())
    except conn.dialect.loaded_dbapi.Error as exc:
        raise StorageError(f"database error: {exc}") from exc
    finally:
        cursor.close()
    return rows


def _worst(
    conn: Connection, now: datetime, since: datetime | None, until: datetime | None, limit: int
) -> tuple[Waiting, ...]:
    """The open conversations waiting for an answer, the most overdue first."""
    if limit <= 0:
        return ()
    due = case(
        (SLA.c.first_response_at.is_(None), SLA.c.first_response_due),
        else_=SLA.c.next_response_due,
    ).label("due")
    query = select(
        SLA.c.conversation_id, SLA.c.department, SLA.c.urgency, SLA.c.waiting_since, due
    ).where(SLA.c.status != "resolved", SLA.c.waiting_since.is_not(None))
    if since is not None:
        query = query.where(SLA.c.opened_at >= since)
    if until is not None:
        query = query.where(SLA.c.opened_at < until)
    query = query.order_by(due.is_(None), due, SLA.c.waiting_since, SLA.c.conversation_id).limit(
        limit
    )
    rows = conn.execute(query).all()
    ids = [row.conversation_id for row in rows]
    subjects = dict(
        conn.execute(
            select(CONVERSATIONS.c.id, CONVERSATIONS.c.subject).where(CONVERSATIONS.c.id.in_(ids))
        ).all()
    )
    found = []
    for row in rows:
        # the CASE loses the column type on SQLite, so the due time may come back as text
        due_at = None if row.due is None else utc(_instant(row.due))
        overdue = None if due_at is None else (now - due_at).total_seconds() / 60
        found.append(
            Waiting(
                row.conversation_id,
                subjects.get(row.conversation_id) or "",
                row.department,
                row.urgency,
                row.waiting_since,
                due_at,
                overdue,
            )
        )
    return tuple(found)


def _instant(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def build_report(
    conn: Connection,
    now: datetime,
    since: datetime | None,
    until: datetime | None,
    by: Sequence[str],
    worst: int = 10,
) -> Report:
    """The report of the conversations whose clock opened in [since, until)."""
    columns = check_by(by)
    width = len(columns)
    dialect, period = conn.dialect.name, (since is not None, until is not None)
    params = _params(dialect, since=since, until=until)
    # run through SQLAlchemy first, which begins the read transaction the raw scan shares
    surveys = conn.exec_driver_sql(_survey_sql(dialect, columns, *period), params).all()
    waiting = _worst(conn, now, since, until, worst)
    params = _params(dialect, now=now, since=since, until=until)
    rows = _raw_rows(conn, _scan_sql(dialect, columns, *period), params)
    tallies = Counter(map(itemgetter(*range(width + 1)), rows))
    days = Counter(map(itemgetter(width + 1), rows))
    first_minutes: defaultdict[tuple[Any, ...], list[float]] = defaultdict(list)
    resolution_minutes: defaultdict[tuple[Any, ...], list[float]] = defaultdict(list)
    for row in rows:
        if row[width + 2] is not None:
            first_minutes[row[:width]].append(row[width + 2])
        if row[width + 3] is not None:
            resolution_minutes[row[:width]].append(row[width + 3])
    del rows

    groups: dict[tuple[Any, ...], _Tally] = {}
    total = _Tally()
    for head, count in tallies.items():
        key, packed = (head[:width], head[width]) if width else ((), head)
        for tally in (groups.setdefault(key, _Tally()), total):
            tally.add(packed, count)
    for *key, rating, count in surveys:
        for tally in (groups.setdefault(tuple(key), _Tally()), total):
            tally.ratings[rating] += count
    weeks: dict[str, list[int]] = {}
    for code, count in days.items():
        counts = weeks.setdefault(_iso_week(code >> 2), [0, 0, 0])
        counts[0] += count
        counts[1] += count * (code & 3 != 0)
        counts[2] += count * (code & 3 == 1)

    histogram = [0] * (len(HISTOGRAM_EDGES) + 1)
    for values in (*first_minutes.values(), *resolution_minutes.values()):
        values.sort()
    for values in first_minutes.values():
        previous = 0
        for index, edge in enumerate(HISTOGRAM_EDGES):
            position = bisect.bisect_left(values, edge)
            histogram[index] += position - previous
            previous = position
        histogram[-1] += len(values) - previous
    stats = tuple(
        tally.stats(key, [first_minutes.get(key, [])], [resolution_minutes.get(key, [])])
        for key, tally in sorted(groups.items(), key=lambda item: _order(item[0]))
    )
    if width == 0:
        overall = stats[0] if stats else total.stats((), [], [])
    else:
        overall = total.stats((), list(first_minutes.values()), list(resolution_minutes.values()))
    lows = (0, *HISTOGRAM_EDGES)
    highs: tuple[float | None, ...] = (*HISTOGRAM_EDGES, None)
    return Report(
        generated_at=now,
        since=since,
        until=until,
        by=columns,
        groups=stats,
        total=overall,
        worst=waiting,
        weeks=tuple(
            Week(week, n, decided, ok, _pct(ok, decided))
            for week, (n, decided, ok) in sorted(weeks.items())
        ),
        histogram=tuple(Bucket(*bucket) for bucket in zip(lows, highs, histogram, strict=True)),
        ratings=tuple(total.ratings[1:]),
    )


def _order(key: tuple[Any, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, str(value or "")) for value in key)
