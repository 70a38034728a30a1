"""Admin commands for outgoing mail: inspect, outbox, suppressions, templates, FAQ stats."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from .clock import SystemClock, utc
from .database import Database
from .rules import Rules
from .settings import Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


def _database(settings: Settings) -> Database:
    db = Database(settings.database_url)
    db.check_schema()
    return db


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def cmd_inspect(args: argparse.Namespace) -> int:
    from .errors import StorageError
    from .inspection import inspect_message, read_eml, render_text

    settings = _settings(args)
    raw = read_eml(args.file)
    db: Database | None = None
    if not args.no_database:
        try:
            db = _database(settings)
        except StorageError as exc:
            print(f"mailcare: database not consulted: {exc}", file=sys.stderr)
            db = None
    try:
        report = inspect_message(raw, settings, db=db, mailbox=args.mailbox)
    finally:
        if db is not None:
            db.dispose()
    if args.json:
        _print_json(report)
    else:
        print(render_text(report))
    return 0


def cmd_outbox_list(args: argparse.Namespace) -> int:
    from .outbox import Outbox

    settings = _settings(args)
    db = _database(settings)
    outbox = Outbox(db, SystemClock(), "admin")
    rows = outbox.listing(args.state, args.limit)
    counts = outbox.counts()
    db.dispose()
    if args.json:
        _print_json({"counts": counts, "rows": rows})
        return 0
    print("  ".join(f"{state}: {count}" for state, count in sorted(counts.items())) or "empty")
    for row in rows:
        print(
            f"{row['id']}\t{row['state']}\t{row['kind']}\t{','.join(row['recipients'])}\t"
            f"{row['created_at']}\t{row['last_error'] or ''}"
        )
    return 0


def cmd_outbox_resend(args: argparse.Namespace) -> int:
    from .outbox import Outbox

    if not args.all and not args.ids:
        print("give outbox ids or --all", file=sys.stderr)
        return 2
    settings = _settings(args)
    db = _database(settings)
    states = ["uncertain", "failed"] if args.failed else ["uncertain"]
    count = Outbox(db, SystemClock(), "admin").resend(None if args.all else args.ids, states)
    db.dispose()
    print(f"{count} message(s) queued to be sent again (same Message-ID)")
    return 0


def cmd_suppressions_list(args: argparse.Namespace) -> int:
    from .suppressions import listing

    settings = _settings(args)
    db = _database(settings)
    with db.reading() as conn:
        rows = listing(conn, args.limit)
    db.dispose()
    if args.json:
        _print_json(rows)
        return 0
    for row in rows:
        print(
            f"{row['address']}\t{row['scope']}\t{row['reason']}\t{row['created_at']}\t"
            f"{row['detail'] or ''}"
        )
    return 0


def _scope(value: str) -> str:
    """An argparse type: all, marketing or list:NAME."""
    from .suppressions import SCOPES

    if value in SCOPES or re.fullmatch(r"list:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", value):
        return value
    raise argparse.ArgumentTypeError(f"not a scope: {value!r} (all, marketing or list:NAME)")


def cmd_suppressions_add(args: argparse.Namespace) -> int:
    from .compose import valid_address
    from .suppressions import suppress

    if not valid_address(args.address.strip().lower()):
        print(f"mailcare: not an e-mail address: {args.address!r}", file=sys.stderr)
        return 2
    settings = _settings(args)
    db = _database(settings)
    with db.transaction() as conn:
        added = suppress(
            conn,
            [(args.address, "manual", args.note, None)],
            SystemClock().now(),
            scope=args.scope,
        )
    db.dispose()
    where = "" if args.scope == "all" else f" ({args.scope})"
    print(f"{args.address}: {'suppressed' if added else 'already suppressed'}{where}")
    return 0


def cmd_suppressions_remove(args: argparse.Namespace) -> int:
    from .suppressions import unsuppress

    settings = _settings(args)
    db = _database(settings)
    with db.transaction() as conn:
        removed = unsuppress(conn, args.address, args.scope)
    db.dispose()
    where = "" if args.scope is None else f" ({args.scope})"
    print(f"{args.address}: {'removed' if removed else 'was not suppressed'}{where}")
    return 0 if removed else 1


def cmd_templates_check(args: argparse.Namespace) -> int:
    from .render import TemplateStore
    from .template_check import check, sample_context

    settings = _settings(args)
    root = Path(args.directory) if args.directory else settings.paths.templates
    findings = check(TemplateStore(root), sample_context)
    errors = [f for f in findings if f.level == "error"]
    for finding in findings:
        print(f"{finding.path}: {finding.level}: {finding.message}")
    print(f"{root}: {len(errors)} error(s), {len(findings) - len(errors)} warning(s)")
    return 1 if errors else 0


def rules_problems(rules: Rules, settings: Settings) -> list[str]:
    """What rules.yaml refers to that does not exist (templates, calendars, addresses)."""
    from .compose import split_mailbox
    from .errors import MailcareError
    from .render import TemplateStore

    problems: list[str] = []
    store = TemplateStore(settings.paths.templates)
    for rule in rules.auto_replies.rules:
        where = f"auto_replies.rules[{rule.name}]"
        try:
            split_mailbox(rule.sender)
        except ValueError as exc:
            problems.append(f"{where}.from: {exc}")
        if not store.exists("replies", rule.template):
            problems.append(
                f"{where}.template: no templates/replies/{rule.template}/ with a default.txt"
            )
        if rule.calendar is not None and rule.calendar not in rules.calendars:
            problems.append(f"{where}.calendar: unknown calendar {rule.calendar!r}")
    problems.extend(_sla_problems(rules, store))
    problems.extend(_marketing_problems(rules, settings, store))
    from .calendar import BusinessCalendar

    for name, config in rules.calendars.items():
        try:
            BusinessCalendar.from_config(config)
        except MailcareError as exc:
            problems.append(f"calendars.{name}: {exc}")
    return problems


def _marketing_problems(rules: Rules, settings: Settings, store: Any) -> list[str]:
    """What campaigns need and lack: a sender, the confirmation template, a reachable
    unsubscribe address and a public web endpoint for the links."""
    marketing = rules.marketing
    if not marketing.lists:
        return []
    problems: list[str] = []
    if marketing.sender is None:
        problems.append("marketing.from: no sender; every campaign must then name its own")
    double = sorted(name for name, item in marketing.lists.items() if item.double_opt_in)
    if double and not store.exists("campaigns", marketing.confirmation.template):
        problems.append(
            f"marketing.confirmation.template: no templates/campaigns/"
            f"{marketing.confirmation.template}/ with a default.txt"
        )
    public = settings.http.public_url if settings.http.enabled else None
    address = marketing.unsubscribe_address
    if public is None and address is None:
        problems.append(
            "marketing.unsubscribe_address: campaign mail would have no way to unsubscribe "
            "(set it, or http.public_url in mailcare.yaml for one-click links)"
        )
    if address is not None and (settings.mailboxes or settings.intake.enabled):
        from .app import own_addresses

        addresses, domains = own_addresses(settings, rules)
        if address.lower() not in addresses and address.rpartition("@")[2].lower() not in domains:
            problems.append(
                f"marketing.unsubscribe_address: {address} is not a mailbox `address` or a "
                "listener recipient, so mail to it never reaches the intake"
            )
    return problems


def _sla_problems(rules: Rules, store: Any) -> list[str]:
    """What the sla section needs and lacks: templates, sender addresses, lead addresses."""
    from .compose import split_mailbox

    sla = rules.sla
    problems: list[str] = []
    if not sla.enabled:
        return problems
    if sla.policies:
        for kind in ("warning", "breach"):
            name = f"{sla.notify_template}-{kind}"
            if not store.exists("notifications", name):
                problems.append(
                    f"sla.notify_template: no templates/notifications/{name}/ with a default.txt"
                )
        if sla.lead_for(None) is None:
            problems.append(
                "sla.leads: no `default` lead: departments without their own lead get no "
                "warnings or escalations"
            )
    for where, value in (("sla.from", sla.notify_from), ("sla.survey.from", sla.survey.sender)):
        if value is None or (where == "sla.survey.from" and not sla.survey.enabled):
            continue
        try:
            split_mailbox(value)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    if sla.survey.enabled and not store.exists("surveys", sla.survey.template):
        problems.append(
            f"sla.survey.template: no templates/surveys/{sla.survey.template}/ with a default.txt"
        )
    return problems


def faq_stats(db: Database, since: datetime | None) -> list[dict[str, Any]]:
    """How often each FAQ entry was offered, per department and month."""
    from .tables import FaqOffer

    OFFERS = FaqOffer.__table__

    month = (
        func.to_char(func.timezone("UTC", OFFERS.c.offered_at), "YYYY-MM")
        if db.is_postgresql
        else func.strftime("%Y-%m", OFFERS.c.offered_at)
    ).label("month")
    query = select(OFFERS.c.entry, OFFERS.c.department, month, func.count().label("offers"))
    if since is not None:
        query = query.where(OFFERS.c.offered_at >= since)
    query = query.group_by(OFFERS.c.entry, OFFERS.c.department, month).order_by(
        month, func.count().desc(), OFFERS.c.entry
    )
    with db.reading() as conn:
        rows = conn.execute(query).all()
    return [
        {"entry": r.entry, "department": r.department, "month": r.month, "offers": int(r.offers)}
        for r in rows
    ]


def cmd_faq_stats(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = _database(settings)
    since = None
    if args.since:
        since = utc(datetime.fromisoformat(args.since))
    elif args.days:
        since = SystemClock().now() - timedelta(days=args.days)
    rows = faq_stats(db, since)
    db.dispose()
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no FAQ answers offered yet")
    for row in rows:
        print(f"{row['month']}\t{row['department'] or '-'}\t{row['offers']}\t{row['entry']}")
    return 0


def register(sub: Any) -> None:
    """Add the commands to the `mailcare` parser."""
    inspect = sub.add_parser("inspect", help="explain what the daemon concludes about a message")
    inspect.add_argument("file", help=".eml file, - for stdin")
    inspect.add_argument("--json", action="store_true", help="stable JSON keys (see README)")
    inspect.add_argument("--mailbox", help="as if it arrived in this mailbox")
    inspect.add_argument("--no-database", action="store_true", help="do not read the database")
    inspect.set_defaults(func=cmd_inspect)

    outbox = sub.add_parser("outbox", help="outgoing mail: list, send uncertain ones again")
    o_sub = outbox.add_subparsers(dest="o_command", required=True, metavar="ACTION")
    o_list = o_sub.add_parser("list", help="counts per state and the newest rows")
    o_list.add_argument("--state", choices=["queued", "sending", "sent", "failed", "uncertain"])
    o_list.add_argument("--limit", type=int, default=50)
    o_list.add_argument("--json", action="store_true")
    o_list.set_defaults(func=cmd_outbox_list)
    o_resend = o_sub.add_parser("resend", help="queue uncertain rows again (risking a double)")
    o_resend.add_argument("ids", nargs="*", type=int)
    o_resend.add_argument("--all", action="store_true")
    o_resend.add_argument("--failed", action="store_true", help="also rows that failed")
    o_resend.set_defaults(func=cmd_outbox_resend)

    supp = sub.add_parser(
        "suppressions", help="addresses some or all automatic mail is not sent to"
    )
    s_sub = supp.add_subparsers(dest="s_command", required=True, metavar="ACTION")
    s_list = s_sub.add_parser("list")
    s_list.add_argument("--limit", type=int, default=1000)
    s_list.add_argument("--json", action="store_true")
    s_list.set_defaults(func=cmd_suppressions_list)
    s_add = s_sub.add_parser("add")
    s_add.add_argument("address")
    s_add.add_argument("--note")
    s_add.add_argument(
        "--scope",
        type=_scope,
        default="all",
        help="all (nothing automatic, the default), marketing (no campaigns) or list:NAME",
    )
    s_add.set_defaults(func=cmd_suppressions_add)
    s_remove = s_sub.add_parser("remove")
    s_remove.add_argument("address")
    s_remove.add_argument(
        "--scope", type=_scope, help="all, marketing or list:NAME (default: every scope)"
    )
    s_remove.set_defaults(func=cmd_suppressions_remove)

    templates = sub.add_parser("templates", help="reply, notification and campaign templates")
    t_sub = templates.add_subparsers(dest="t_command", required=True, metavar="ACTION")
    t_check = t_sub.add_parser("check", help="render every template with sample data")
    t_check.add_argument("directory", nargs="?")
    t_check.set_defaults(func=cmd_templates_check)

    faq = sub.add_parser("faq", help="FAQ answers offered in auto-replies")
    f_sub = faq.add_subparsers(dest="f_command", required=True, metavar="ACTION")
    f_stats = f_sub.add_parser("stats", help="offers per entry, department and month")
    f_stats.add_argument("--since", help="ISO date, e.g. 2026-01-01")
    f_stats.add_argument("--days", type=int)
    f_stats.add_argument("--json", action="store_true")
    f_stats.set_defaults(func=cmd_faq_stats)
