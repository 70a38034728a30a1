"""`mailcare audience`: import subscribers, subscribe and unsubscribe, list and count a list."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .audience import STATUSES, audience, members
from .audience_csv import read_csv
from .audience_import import (
    Enrolment,
    NewSubscriber,
    add_members,
    checked,
    from_contacts,
    subscribe_member,
)
from .clock import SystemClock
from .database import Database
from .keys import instance_key
from .marketing_config import MailingList, Segment
from .optin import Confirmations
from .outbox import Outbox
from .render import TemplateStore
from .rules import Rules, load_rules
from .settings import Settings, load_settings
from .suppressions import campaign_scopes, suppressed

NO_CONSENT_HINT = (
    "a new member needs a consent source: give --consent-source or a consent_source column"
)


@dataclass
class _Context:
    settings: Settings
    db: Database
    rules: Rules
    mailing_list: MailingList
    segment: Segment | None
    now: datetime


class _DryRun(Exception):
    """Rolls the import's transaction back, carrying what it would have done."""

    def __init__(self, enrolment: Enrolment) -> None:
        super().__init__("dry run")
        self.enrolment = enrolment


def _open(args: argparse.Namespace) -> _Context:
    """Settings, rules, the list and segment named (ValueError names the known ones), database."""
    settings = load_settings(Path(args.config) if args.config else None)
    rules = load_rules(settings.paths.rules)
    mailing_list = rules.marketing.list_of(args.list)
    name = getattr(args, "segment", None)
    segment = rules.marketing.segment_of(name) if name else None
    db = Database(settings.database_url)
    db.check_schema()
    return _Context(settings, db, rules, mailing_list, segment, SystemClock().now())


def _confirmer(ctx: _Context) -> Confirmations:
    from .app import build_identity

    http = ctx.settings.http
    return Confirmations(
        TemplateStore(ctx.settings.paths.templates),
        Outbox(ctx.db, SystemClock(), "cli"),
        build_identity(ctx.settings, ctx.rules, ctx.db),
        instance_key(ctx.db, "optin"),
        instance_key(ctx.db, "message-id"),
        http.public_url if http.enabled else None,
        lambda: ctx.rules,
    )


def _summary(enrolment: Enrolment, problems: int = 0) -> str:
    pending = f" ({len(enrolment.pending)} pending confirmation)" if enrolment.pending else ""
    return (
        f"added {len(enrolment.added)}{pending}, updated {len(enrolment.updated)}, "
        f"unchanged {len(enrolment.unchanged)}, confirmation mails queued "
        f"{enrolment.confirmations}, skipped {len(enrolment.skipped) + problems}"
    )


def _hint(enrolment: Enrolment) -> None:
    if any(reason.startswith("no consent source") for _, reason in enrolment.skipped):
        print(f"hint: {NO_CONSENT_HINT}", file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> int:
    """Run `mailcare audience import`."""
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"mailcare: {exc}", file=sys.stderr)
        return 2
    try:
        parsed = read_csv(data, args.consent_source)
    except ValueError as exc:
        print(f"mailcare: {args.file}: {exc}", file=sys.stderr)
        return 2
    ctx = _open(args)
    try:
        confirmer = _confirmer(ctx)
        try:
            with ctx.db.transaction() as conn:
                enrolment = add_members(
                    conn,
                    args.list,
                    ctx.mailing_list,
                    parsed.people,
                    ctx.now,
                    confirmer,
                    confirmed=args.confirmed,
                )
                if args.dry_run:
                    raise _DryRun(enrolment)
        except _DryRun as dry:
            enrolment = dry.enrolment
    finally:
        ctx.db.dispose()
    problems = list(parsed.problems)
    for address, reason in enrolment.skipped:
        problems.append((parsed.lines.get(address, 0), f"{address}: {reason}"))
    for line, message in sorted(problems):
        print(f"{args.file}:{line}: skipped: {message}", file=sys.stderr)
    _hint(enrolment)
    prefix = "dry run, nothing saved: " if args.dry_run else ""
    print(f"{prefix}{args.list}: {_summary(enrolment, len(parsed.problems))}")
    return 1 if problems else 0


def cmd_from_contacts(args: argparse.Namespace) -> int:
    """Run `mailcare audience from-contacts`."""
    ctx = _open(args)
    try:
        confirmer = _confirmer(ctx)
        with ctx.db.transaction() as conn:
            people = from_contacts(conn, args.tier, args.consent_source, ctx.now)
            enrolment = add_members(
                conn,
                args.list,
                ctx.mailing_list,
                people,
                ctx.now,
                confirmer,
                confirmed=args.confirmed,
            )
    finally:
        ctx.db.dispose()
    for address, reason in enrolment.skipped:
        print(f"skipped {address}: {reason}", file=sys.stderr)
    print(f"{args.list}: {len(people)} contacts; {_summary(enrolment)}")
    return 1 if enrolment.skipped else 0


def cmd_subscribe(args: argparse.Namespace) -> int:
    """Run `mailcare audience subscribe`."""
    person = checked(
        NewSubscriber(
            address=args.address,
            name=args.name,
            language=args.language,
            timezone=args.timezone,
            consent_source=args.consent_source,
        )
    )
    ctx = _open(args)
    try:
        confirmer = _confirmer(ctx)
        with ctx.db.transaction() as conn:
            enrolment = subscribe_member(
                conn, args.list, ctx.mailing_list, person, ctx.now, confirmer
            )
            blocked = suppressed(conn, [person.address], campaign_scopes(args.list))
    finally:
        ctx.db.dispose()
    address = person.address
    if address in blocked and not enrolment.skipped:
        print(
            f"warning: {address} is on the suppression list ({blocked[address]}); "
            f"campaigns to {args.list} skip it until that entry is removed",
            file=sys.stderr,
        )
    if enrolment.skipped:
        print(f"mailcare: {address}: {enrolment.skipped[0][1]}", file=sys.stderr)
        return 1
    if enrolment.pending:
        mail = "confirmation mail queued" if enrolment.confirmations else "no mail (suppressed)"
        print(f"{address}: pending confirmation on {args.list}; {mail}")
    elif enrolment.added:
        print(f"{address}: subscribed to {args.list}")
    else:
        print(f"{address}: already on {args.list} (nothing changed in the membership)")
    return 0


def cmd_unsubscribe(args: argparse.Namespace) -> int:
    """Run `mailcare audience unsubscribe`."""
    from .audience import unsubscribe_member

    ctx = _open(args)
    try:
        with ctx.db.transaction() as conn:
            ended = unsubscribe_member(conn, args.address, args.list, ctx.now)
    finally:
        ctx.db.dispose()
    if not ended:
        print(f"mailcare: {args.address} is not subscribed to {args.list}", file=sys.stderr)
        return 1
    print(f"{args.address.strip().lower()}: unsubscribed from {args.list}")
    return 0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def cmd_list(args: argparse.Namespace) -> int:
    """Run `mailcare audience list`."""
    ctx = _open(args)
    try:
        with ctx.db.reading() as conn:
            statuses = [args.status] if args.status else None
            found = members(conn, args.list, ctx.now, statuses, ctx.segment)
    finally:
        ctx.db.dispose()
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                "address": m.recipient.address,
                "status": m.status,
                "name": m.recipient.name,
                "language": m.recipient.language,
                "timezone": m.recipient.timezone,
                "tier": m.recipient.tier,
                "lifecycle": m.recipient.lifecycle,
                "tags": sorted(m.recipient.tags),
                "attributes": m.recipient.attributes,
                "last_contact_at": _iso(m.recipient.last_contact_at),
                "consent_source": m.consent_source,
                "consent_at": _iso(m.consent_at),
                "confirmed_at": _iso(m.confirmed_at),
                "unsubscribed_at": _iso(m.unsubscribed_at),
            }
            for m in found
        ]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for m in found:
        person = m.recipient
        print(
            f"{person.address}\t{m.status}\t{person.name or '-'}\t{person.tier or '-'}"
            f"\t{person.lifecycle}\t{person.language or '-'}"
        )
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    """Run `mailcare audience count`."""
    ctx = _open(args)
    try:
        with ctx.db.reading() as conn:
            print(len(audience(conn, args.list, ctx.segment, ctx.now)))
    finally:
        ctx.db.dispose()
    return 0


def _usage_errors(command: Any) -> Any:
    """Unknown lists, segments and bad arguments end in a message and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(command(args))
        except ValueError as exc:
            print(f"mailcare: {exc}", file=sys.stderr)
            return 2

    return run


def register(sub: Any) -> None:
    """Add `mailcare audience ...` to the command line."""
    parser = sub.add_parser("audience", help="campaign subscribers: import, subscribe, list")
    actions = parser.add_subparsers(dest="audience_command", required=True)

    def action(name: str, text: str, command: Any, segment: bool = False) -> Any:
        one = actions.add_parser(name, help=text)
        one.add_argument("--list", required=True, help="a list of marketing.lists")
        if segment:
            one.add_argument("--segment", help="a segment of marketing.segments")
        one.set_defaults(func=_usage_errors(command))
        return one

    imports = action("import", "add subscribers from a UTF-8 CSV file", cmd_import)
    imports.add_argument("file", metavar="FILE.csv")
    imports.add_argument("--consent-source", help="consent source of rows without their own")
    imports.add_argument(
        "--confirmed", action="store_true", help="the consent on record was a confirmed opt-in"
    )
    imports.add_argument("--dry-run", action="store_true", help="check and count, save nothing")
    contacts = action("from-contacts", "add customers of the archive", cmd_from_contacts)
    contacts.add_argument("--consent-source", required=True)
    contacts.add_argument("--tier", action="append", help="only contacts of this tier (repeat)")
    contacts.add_argument(
        "--confirmed", action="store_true", help="the consent on record was a confirmed opt-in"
    )
    subscribe = action("subscribe", "subscribe one address on a new consent", cmd_subscribe)
    subscribe.add_argument("address")
    subscribe.add_argument("--consent-source", required=True)
    subscribe.add_argument("--name")
    subscribe.add_argument("--language")
    subscribe.add_argument("--timezone")
    unsubscribe = action("unsubscribe", "end one address's membership", cmd_unsubscribe)
    unsubscribe.add_argument("address")
    listing = action("list", "members of a list", cmd_list, segment=True)
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--json", action="store_true")
    action("count", "how many a campaign would reach (before suppressions)", cmd_count, True)
