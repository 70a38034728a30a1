"""SLA benchmarks: each part prints one JSON line.

    python bench/sla.py [--only sweep|report] [--open N] [--conversations N] [--seed S]

sweep: --open conversations (default 100,000) opened over the last three business days, their
clocks computed from their events by SlaBook (the rate is reported); then the sweep at a
moment when the previous one ran a minute before (the steady state: only what fell due in
that minute is announced) and a catch-up sweep after an hour without sweeping. The ceiling
is a plain sqlite3 SELECT of every open clock row: what a sweep that did not use the
next-check index would have to read.

report: N conversations with SLA clocks (and survey answers for a fifth of them) in a new
SQLite file; the time of build_report(by department and urgency) against, as the ceiling
in the same run, a plain sqlite3 SELECT (fetchall) of the columns the report reads.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.database import Database  # noqa: E402
from daemon.sla_report import build_report  # noqa: E402

TARGET_S = 5.0
CHUNK = 50_000
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
DEPARTMENTS = ("billing", "sales", "support", "shipping", "returns", "technical")
URGENCIES = ("low", "normal", "high", "urgent")
TIERS = ("ordinary", "ordinary", "ordinary", "gold", "platinum")
FIRST_ALLOWED = {"low": 480, "normal": 240, "high": 120, "urgent": 60}
COLUMNS = (
    "conversation_id, policy, mailbox, department, urgency, tier, calendar, status, opened_at,"
    " waiting_since, first_response_due, first_response_at, first_response_minutes,"
    " next_response_due, next_response_rounds, next_response_breaches, resolution_due,"
    " resolved_at, resolution_minutes, checks, notified, next_check_at, updated_at"
)
# what build_report reads, for the ceiling
READ = (
    "SELECT c.department, c.urgency, c.opened_at, c.status, c.waiting_since,"
    " c.first_response_due, c.first_response_at, c.first_response_minutes,"
    " c.next_response_due, c.next_response_breaches, c.resolution_due, c.resolved_at,"
    " c.resolution_minutes, s.rating"
    " FROM sla_clocks c LEFT JOIN survey_answers s ON s.conversation_id = c.conversation_id"
)


class Stamps:
    """Minute-granular instants as SQLite stores them (naive UTC text), formatted once each."""

    def __init__(self, origin: datetime) -> None:
        self.origin = origin.replace(tzinfo=None)
        self.cache: dict[int, str] = {}

    def __call__(self, minute: int | None) -> str | None:
        if minute is None:
            return None
        found = self.cache.get(minute)
        if found is None:
            moment = self.origin + timedelta(minutes=minute)
            found = self.cache[minute] = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
        return found


Row = tuple[Any, ...]


def clock_rows(count: int, rng: random.Random) -> Iterator[tuple[Row, Row, Row | None]]:
    """(conversation, clock, survey answer or None) per conversation, over 26 weeks."""
    stamp = Stamps(NOW - timedelta(weeks=26))
    span = 26 * 7 * 1440
    for number in range(1, count + 1):
        department, urgency = rng.choice(DEPARTMENTS), rng.choice(URGENCIES)
        opened = rng.randrange(span)
        allowed = FIRST_ALLOWED[urgency]
        status = rng.choices(("resolved", "open", "paused"), (75, 20, 5))[0]
        answered = status == "resolved" or rng.random() < 0.6
        first_minutes = rng.lognormvariate(4.2, 0.9) if answered else None
        first_at = opened + int(first_minutes) if first_minutes is not None else None
        resolution_minutes = rng.lognormvariate(7.0, 1.0) if status == "resolved" else None
        resolved_at = opened + int(resolution_minutes) if resolution_minutes else None
        waiting = None
        next_due = None
        if status != "resolved":
            waiting = opened if first_at is None else first_at + rng.randrange(1, 600)
            next_due = None if first_at is None else waiting + 240
        rounds = rng.randrange(0, 4) if answered else 0
        breaches = sum(rng.random() < 0.1 for _ in range(rounds))
        conversation = (
            number,
            f"Request {number}",
            "support",
            "open" if status != "resolved" else "closed",
            stamp(opened),
            stamp(opened),
            3,
        )
        clock = (
            number,
            f"{urgency}-{department}",
            "support",
            department,
            urgency,
            rng.choice(TIERS),
            "office",
            status,
            stamp(opened),
            stamp(waiting),
            stamp(opened + allowed),
            stamp(first_at),
            first_minutes,
            stamp(next_due),
            rounds,
            breaches,
            stamp(opened + 2880),
            stamp(resolved_at),
            resolution_minutes,
            "[]",
            "[]",
            None,
            stamp(opened),
        )
        survey = None
        if status == "resolved" and rng.random() < 0.27:
            rating = rng.choices((1, 2, 3, 4, 5), (5, 5, 15, 35, 40))[0]
            survey = (number, rating, stamp(opened + 4000), "web")
        yield conversation, clock, survey


def fill(db: Database, count: int, seed: int) -> None:
    """Insert count conversations with their clocks, in chunks."""
    rng = random.Random(seed)
    rows = clock_rows(count, rng)
    while True:
        chunk = [row for _, row in zip(range(CHUNK), rows, strict=False)]
        if not chunk:
            return
        with db.transaction(durable=False) as conn:
            conn.exec_driver_sql(
                "INSERT INTO conversations (id, subject, mailbox, status, opened_at,"
                " last_message_at, message_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [conversation for conversation, _, _ in chunk],
            )
            conn.exec_driver_sql(
                f"INSERT INTO sla_clocks ({COLUMNS}) VALUES ({', '.join('?' * 23)})",
                [clock for _, clock, _ in chunk],
            )
            surveys = [survey for _, _, survey in chunk if survey]
            if surveys:
                conn.exec_driver_sql(
                    "INSERT INTO survey_answers (conversation_id, rating, answered_at, channel)"
                    " VALUES (?, ?, ?, ?)",
                    surveys,
                )


def bench_report(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mailcare-bench-sla-"))
    path = work / "sla.sqlite3"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    began = time.perf_counter()
    fill(db, args.conversations, args.seed)
    fill_s = time.perf_counter() - began
    with db.reading() as conn:
        began = time.perf_counter()
        report = build_report(conn, NOW, None, None, ["department", "urgency"])
        report_s = time.perf_counter() - began
    db.dispose()
    assert report.total.conversations == args.conversations
    raw = sqlite3.connect(path)
    try:
        began = time.perf_counter()
        rows = raw.execute(READ).fetchall()
        raw_select_s = time.perf_counter() - began
    finally:
        raw.close()
    assert len(rows) == args.conversations
    size = path.stat().st_size
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    return {
        "bench": "sla-report",
        "conversations": args.conversations,
        "groups": len(report.groups),
        "report_s": round(report_s, 3),
        "raw_select_s": round(raw_select_s, 3),
        "target_s": TARGET_S,
        "fill_s": round(fill_s, 1),
        "database_mb": round(size / 2**20, 1),
    }


SWEEP_RULES = """
version: 1
calendars:
  office:
    timezone: Europe/Berlin
    hours: {mon-fri: ["09:00-12:30", "13:30-18:00"]}
sla:
  calendar: office
  from: "SLA <sla@example.com>"
  leads: {default: lead@example.com}
  policies:
    - {name: urgent, when: {urgencies: [emergency]}, first_response: 1h, resolution: 8h}
    - {name: standard, first_response: 4h, next_response: 8h, resolution: 3d}
"""


def bench_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from daemon.clock import FrozenClock
    from daemon.outbox import Outbox
    from daemon.render import TemplateStore
    from daemon.rules import load_rules
    from daemon.screening import Identity
    from daemon.sla import NewEvent, SlaBook
    from daemon.sla_sweep import Sweeper

    work = Path(tempfile.mkdtemp(prefix="mailcare-bench-sweep-"))
    path = work / "sweep.sqlite3"
    rules_path = work / "rules.yaml"
    rules_path.write_text(SWEEP_RULES, encoding="utf-8")
    rules = load_rules(rules_path)
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    # Thursday 14:00 Berlin; the requests came in over the three days before
    start = datetime(2026, 3, 12, 13, 0, tzinfo=UTC)
    clock = FrozenClock(start)
    rng = random.Random(args.seed)
    count = args.open
    stamp = Stamps(start - timedelta(days=3))
    with db.transaction(durable=False) as conn:
        conn.exec_driver_sql(
            "INSERT INTO conversations (id, subject, mailbox, status, opened_at,"
            " last_message_at, message_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (n, f"Request {n}", "support", "open", stamp(0), stamp(0), 1)
                for n in range(1, count + 1)
            ],
        )
    book = SlaBook(lambda: rules, clock)
    began = time.perf_counter()
    for first in range(1, count + 1, CHUNK):
        with db.transaction(durable=False) as conn:
            book.record(
                conn,
                [
                    NewEvent(
                        f"opened:{n}",
                        n,
                        "opened",
                        start - timedelta(minutes=rng.randrange(3 * 1440)),
                        "bench",
                    )
                    for n in range(first, min(first + CHUNK, count + 1))
                ],
            )
    recompute_s = time.perf_counter() - began
    identity = Identity(frozenset(), frozenset(), "loop-token", "X-Mailcare-Loop")
    outbox = Outbox(db, clock, "bench")
    templates = TemplateStore(ROOT / "templates")
    sweeper = Sweeper(db, clock, book, templates, outbox, identity, b"bench-key")
    began = time.perf_counter()
    first_sweep = sweeper.run()  # everything already due: the first sweep ever
    initial_s = time.perf_counter() - began
    timings: dict[str, tuple[float, int]] = {}
    for name, step in (("steady", timedelta(minutes=1)), ("catch_up", timedelta(hours=1))):
        clock.advance(step)
        began = time.perf_counter()
        queued = sweeper.run()
        timings[name] = (time.perf_counter() - began, queued)
    db.dispose()
    raw = sqlite3.connect(path)
    try:
        began = time.perf_counter()
        rows = raw.execute(
            "SELECT conversation_id, checks, notified, next_check_at FROM sla_clocks"
            " WHERE status != 'resolved'"
        ).fetchall()
        scan_s = time.perf_counter() - began
    finally:
        raw.close()
    assert len(rows) == count
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    return {
        "bench": "sla-sweep",
        "open_conversations": count,
        "steady_sweep_s": round(timings["steady"][0], 4),
        "steady_notifications": timings["steady"][1],
        "catch_up_sweep_s": round(timings["catch_up"][0], 3),
        "catch_up_notifications": timings["catch_up"][1],
        "first_sweep_s": round(initial_s, 2),
        "first_sweep_notifications": first_sweep,
        "scan_open_clocks_s": round(scan_s, 3),
        "recompute_per_s": round(count / recompute_s),
        "target_s": 1.0,
    }


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "sweep": bench_sweep,
    "report": bench_report,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(PARTS), help="run one part (default: all)")
    parser.add_argument("--conversations", type=int, default=1_000_000, help="report part")
    parser.add_argument("--open", type=int, default=100_000, help="sweep part")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for name, part in PARTS.items():
        if args.only in (None, name):
            print(json.dumps(part(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
