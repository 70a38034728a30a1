"""`mailcare sla`: show a clock; resolve, pause, resume or reopen it; recompute; report."""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from .clock import SystemClock
from .database import Database
from .errors import MailcareError
from .header_values import normalize_message_id
from .keys import instance_key
from .outbox import Outbox
from .render import TemplateStore
from .rules import RulesFile
from .sla import CLOCKS, EVENTS, NewEvent, SlaBook
from .sla_imap import conversation_of_message
from .sla_report import GROUP_COLUMNS

_TICKET = re.compile(r"^\[?(?:[A-Za-z][A-Za-z0-9-]{0,15}#)?(\d{1,18})\]?$")
ACTIONS = {
    "resolve": "resolved",
    "reopen": "reopened",
    "pause": "paused",
    "resume": "resumed",
}


def conversation_of(conn: Connection, ticket: str) -> int | None:
    """The conversation a ticket tag (MC#12), number (12) or Message-ID names."""
    match = _TICKET.match(ticket.strip())
    if match is not None:
        return int(match.group(1))
    return conversation_of_message(conn, normalize_message_id(ticket))


def _open(args: argparse.Namespace) -> tuple[Database, SlaBook]:
    from .app import build_identity, build_sla_book
    from .settings import load_settings

    settings = load_settings(Path(args.config) if args.config else None)
    db = Database(settings.database_url)
    db.check_schema()
    rules_file = RulesFile(settings.paths.rules)
    clock = SystemClock()
    identity = build_identity(settings, rules_file.current, db)
    outbox = Outbox(db, clock, "cli")
    templates = TemplateStore(settings.paths.templates)
    keys = (instance_key(db, "survey"), instance_key(db, "message-id"))
    book = build_sla_book(settings, rules_file, clock, identity, outbox, templates, keys)
    return db, book


def clock_report(conn: Connection, conversation: int) -> dict[str, Any] | None:
    """The clock row and the events of one conversation, as JSON-ready values."""
    row = conn.execute(select(CLOCKS).where(CLOCKS.c.conversation_id == conversation)).first()
    if row is None:
        return None
    values = {
        key: value.isoformat() if hasattr(value, "isoformat") else value
        for key, value in row._mapping.items()
        if key not in ("checks", "notified")
    }
    values["announced"] = json.loads(row.notified or "[]")
    events = conn.execute(
        select(EVENTS.c.kind, EVENTS.c.at, EVENTS.c.source, EVENTS.c.detail)
        .where(EVENTS.c.conversation_id == conversation)
        .order_by(EVENTS.c.at, EVENTS.c.id)
    ).all()
    values["events"] = [
        {"kind": e.kind, "at": e.at.isoformat(), "source": e.source, "detail": e.detail}
        for e in events
    ]
    return values


def cmd_show(args: argparse.Namespace) -> int:
    db, _book = _open(args)
    try:
        with db.reading() as conn:
            conversation = conversation_of(conn, args.ticket)
            report = clock_report(conn, conversation) if conversation is not None else None
    finally:
        db.dispose()
    if report is None:
        print(f"no SLA clock for {args.ticket}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    for key in sorted(k for k in report if k != "events"):
        print(f"{key:24} {report[key]}")
    print("events:")
    for event in report["events"]:
        print(f"  {event['at']}  {event['kind']:9} {event['source']} {event['detail'] or ''}")
    return 0


def cmd_event(args: argparse.Namespace) -> int:
    kind = ACTIONS[args.sla_command]
    db, book = _open(args)
    try:
        with db.transaction() as conn:
            conversation = conversation_of(conn, args.ticket)
            if conversation is None or not book.status(conn, [conversation]):
                print(f"no SLA clock for {args.ticket}", file=sys.stderr)
                return 1
            event = NewEvent(
                f"command:{uuid.uuid4().hex}",
                conversation,
                kind,
                book.clock.now(),
                "command",
                detail=(args.note or None),
            )
            book.record(conn, [event])
            status = book.status(conn, [conversation])[conversation]
    except MailcareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    print(f"conversation {conversation}: {kind}; the clock is now {status}")
    return 0


def cmd_recompute(args: argparse.Namespace) -> int:
    db, book = _open(args)
    try:
        with db.reading() as conn:
            query = select(CLOCKS.c.conversation_id)
            if not args.all:
                query = query.where(CLOCKS.c.status != "resolved")
            ids = [int(conv) for (conv,) in conn.execute(query)]
        for start in range(0, len(ids), 2000):
            with db.transaction() as conn:
                book.recompute(conn, ids[start : start + 2000])
    finally:
        db.dispose()
    print(f"{len(ids)} SLA clocks recomputed")
    return 0


def register(sub: Any) -> None:
    """Add `mailcare sla ...` to the command line."""
    sla = sub.add_parser("sla", help="SLA clocks: show, resolve, pause, resume, reopen, report")
    sla_sub = sla.add_subparsers(dest="sla_command", required=True)
    show = sla_sub.add_parser("show", help="a conversation's clock, due times and events")
    show.add_argument("ticket", help="ticket tag (MC#12), number or Message-ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    helps = {
        "resolve": "mark a conversation resolved (stops its clocks; sends the survey)",
        "reopen": "reopen a resolved conversation",
        "pause": "stop the clocks while waiting on the customer",
        "resume": "start the clocks again",
    }
    for name, text in helps.items():
        action = sla_sub.add_parser(name, help=text)
        action.add_argument("ticket", help="ticket tag (MC#12), number or Message-ID")
        action.add_argument("--note", help="a note kept with the event")
        action.set_defaults(func=cmd_event)
    recompute = sla_sub.add_parser(
        "recompute", help="recompute open clocks from their events (after a policy change)"
    )
    recompute.add_argument("--all", action="store_true", help="resolved ones too")
    recompute.set_defaults(func=cmd_recompute)
    add_report_parser(sla_sub)


# -- mailcare sla report ---------------------------------------------------------------------

FORMATS = ("table", "csv", "json", "html")
SPAN = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")
SPAN_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str, now: datetime) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise), or a span back from now: 30d."""
    span = SPAN.match(value)
    if span:
        return now - timedelta(**{SPAN_UNITS[span.group(2)]: int(span.group(1))})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a date, a date-time nor a span such as 30d, 12w or 24h"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def cmd_report(args: argparse.Namespace) -> int:
    """Run `mailcare sla report`."""
    from .settings import load_settings
    from .sla_report import build_report, check_by
    from .sla_report_format import FORMATTERS

    now = SystemClock().now()
    try:
        since = parse_when(args.since, now) if args.since else None
        until = parse_when(args.until, now) if args.until else None
        by = check_by([c.strip() for c in args.by.split(",") if c.strip()] if args.by else [])
        if args.worst < 0:
            raise ValueError("--worst must not be negative")
    except ValueError as exc:
        print(f"mailcare: {exc}", file=sys.stderr)
        return 2
    settings = load_settings(Path(args.config) if args.config else None)
    db = Database(settings.database_url)
    try:
        db.check_schema()
        with db.reading() as conn:
            report = build_report(conn, now, since, until, by, worst=args.worst)
    finally:
        db.dispose()
    output = FORMATTERS[args.format](report)
    if args.output and args.output != "-":
        Path(args.output).write_text(output, encoding="utf-8")
    else:
        sys.stdout.write(output)
    return 0


def add_report_parser(sla_sub: Any) -> None:
    """Add `report` to the subcommands of `mailcare sla`."""
    report = sla_sub.add_parser("report", help="SLA compliance, response times and surveys")
    report.add_argument("--since", help="ISO date or date-time, or a span back from now: 30d, 12w")
    report.add_argument("--until", help="end of the period (exclusive), same forms as --since")
    report.add_argument(
        "--by", default="", help=f"group by a comma list of: {', '.join(GROUP_COLUMNS)}"
    )
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument("--output", help="write to FILE instead of stdout")
    report.add_argument("--worst", type=int, default=10, help="how many waiting conversations")
    report.set_defaults(func=cmd_report)
