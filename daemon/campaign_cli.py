"""`mailcare campaign`: save, schedule, preview, test-send, send, pause, resume, cancel, status."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .campaign_config import CampaignDefinition, Schedule, load_definitions
from .campaign_ledger import ACTIVE
from .campaign_mime import Person
from .campaign_send import CampaignSender
from .campaigns import CampaignBook, CampaignError, sender_of
from .clock import SystemClock
from .database import Database
from .errors import ConfigError
from .folders import new_owner_id
from .keys import instance_key
from .render import TemplateStore
from .rule_types import seconds
from .rules import RulesFile
from .settings import Settings, load_settings


@dataclass
class Context:
    """What every campaign command opens."""

    settings: Settings
    db: Database
    rules_file: RulesFile
    book: CampaignBook


def _open(args: argparse.Namespace) -> Context:
    settings = load_settings(Path(args.config) if args.config else None)
    db = Database(settings.database_url)
    db.check_schema()
    rules_file = RulesFile(settings.paths.rules)
    book = CampaignBook(db, SystemClock(), rules_file.fresh, instance_key(db, "message-id"))
    return Context(settings, db, rules_file, book)


def _definition_from_args(args: argparse.Namespace) -> CampaignDefinition:
    """A campaign from a YAML file, or from the command-line options."""
    source = getattr(args, "source", None)
    if source and Path(source).is_file():
        found = load_definitions(Path(source))
        if len(found) != 1:
            raise ConfigError(f"{source}: holds {len(found)} campaigns; schedule them one by one")
        return found[0]
    if not (args.list and args.template):
        raise ConfigError(
            "give a campaign file, the name of a saved campaign, or --name, --list and --template"
        )
    schedule: dict[str, Any] = {"timezone": args.timezone, "local_time": args.local_time}
    if args.at:
        schedule["at"] = args.at
    if args.repeat:
        schedule["repeat"] = args.repeat
    if args.late_start is not None:
        schedule["late_start"] = seconds(args.late_start)
    data: dict[str, Any] = {
        "name": args.name or source,
        "kind": args.kind,
        "list": args.list,
        "template": args.template,
        "schedule": Schedule.model_validate(schedule),
    }
    if args.segment:
        data["segment"] = args.segment
    if args.sender:
        data["from"] = args.sender
    try:
        return CampaignDefinition.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"campaign: {exc}") from None


def cmd_save(args: argparse.Namespace) -> int:
    ctx = _open(args)
    saved = []
    for definition in load_definitions(Path(args.file)):
        ctx.book.save(definition, schedule=args.schedule)
        saved.append(definition.name)
    ctx.db.dispose()
    print(f"saved {', '.join(saved)}" + (" and scheduled" if args.schedule else " (draft)"))
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    ctx = _open(args)
    try:
        source = args.source
        if source and not Path(source).is_file() and not (args.list or args.template):
            start = ctx.book.schedule(source)
            name = source
        else:
            definition = _definition_from_args(args)
            ctx.book.save(definition, schedule=True)
            name = definition.name
            start = ctx.book.status(name)[0]["next_run_at"]
    finally:
        ctx.db.dispose()
    print(f"{name}: starts at {start}" if start else f"{name}: no occurrence left to schedule")
    return 0


def _person(ctx: Context, address: str | None, language: str | None) -> Person:
    if address:
        from .audience import recipient

        with ctx.db.reading() as conn:
            found = recipient(conn, address, SystemClock().now())
        if found is None:
            raise CampaignError(f"{address} is not a subscriber")
        return Person(
            found.subscriber_id,
            found.address,
            found.name,
            language or found.language,
            found.tier,
            found.lifecycle,
            found.tags,
            found.attributes,
        )
    return Person(None, "jane.doe@example.com", "Jane Doe", language or "en", "vip", "active")


def _composer_for(ctx: Context, name: str) -> tuple[CampaignDefinition, Any]:
    """A composer for a stored campaign or a campaign file, outside any run."""
    from .app import build_identity
    from .campaign_mime import CampaignComposer, Links

    if Path(name).is_file():
        definition = load_definitions(Path(name))[0]
    else:
        definition = ctx.book.definition(name)[1]
    rules = ctx.rules_file.current
    identity = build_identity(ctx.settings, rules, ctx.db)
    listed = rules.marketing.lists.get(definition.list)
    public_url = ctx.settings.http.public_url if ctx.settings.http.enabled else None
    composer = CampaignComposer(
        definition,
        0,
        TemplateStore(ctx.settings.paths.templates),
        sender=sender_of(definition, rules),
        reply_to=definition.reply_to or rules.marketing.reply_to,
        list_title=listed.title if listed and listed.title else definition.list,
        company={
            "name": rules.identity.company.name,
            "signature": rules.identity.company.signature,
        },
        links=Links(
            instance_key(ctx.db, "unsubscribe"), public_url, rules.marketing.unsubscribe_address
        ),
        loop=(identity.loop_header, identity.loop_token),
    )
    return definition, composer


def cmd_preview(args: argparse.Namespace) -> int:
    ctx = _open(args)
    try:
        _definition, composer = _composer_for(ctx, args.campaign)
        person = _person(ctx, args.subscriber, args.language)
        raw = composer.build(person, "preview@mailcare.invalid", SystemClock().now())
    finally:
        ctx.db.dispose()
    if args.raw:
        sys.stdout.buffer.write(raw)
        return 0
    from email import message_from_bytes, policy

    message = message_from_bytes(raw, policy=policy.default)
    for header in ("From", "To", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post"):
        if message[header]:
            print(f"{header}: {message[header]}")
    print()
    body = message.get_body(preferencelist=("html",) if args.html else ("plain",))
    if body is not None:
        print(body.get_content())
    return 0


def cmd_test_send(args: argparse.Namespace) -> int:
    from .transport import RelayUnavailable, SmtpSession

    ctx = _open(args)
    try:
        if not ctx.settings.relay.enabled:
            raise ConfigError("relay: no relay is enabled (relay.enabled) to send the test with")
        _definition, composer = _composer_for(ctx, args.campaign)
        person = _person(ctx, args.subscriber, args.language)
        shown = Person(
            person.subscriber_id,
            args.to,
            person.name,
            person.language,
            person.tier,
            person.lifecycle,
            person.tags,
            person.attributes,
        )
        now = SystemClock().now()
        stamp = int(now.timestamp() * 1000)
        raw = composer.build(shown, f"test.{stamp}@{composer.domain}", now)
        session = SmtpSession(ctx.settings.relay)
        try:
            result = session.send(composer.sender_address, [args.to], raw)
        except RelayUnavailable as exc:
            print(f"mailcare: relay unavailable: {exc}", file=sys.stderr)
            return 1
        finally:
            session.close()
    finally:
        ctx.db.dispose()
    print(f"test message to {args.to}: {result.outcome} {result.detail}")
    return 0 if result.outcome == "sent" else 1


def _progress_bar(total: int, disable: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", disable=disable, file=sys.stderr, dynamic_ncols=True)


def _latest(ctx: Context, name: str) -> dict[str, Any] | None:
    runs = ctx.book.status(name)[0]["runs"]
    return runs[0] if runs else None


def _done(run: dict[str, Any]) -> int:
    return sum(count for state, count in run["sends"].items() if state not in ACTIVE)


def cmd_send(args: argparse.Namespace) -> int:
    """Start a campaign now and send it from this process, with a progress bar."""
    from .app import build_campaign_sender, build_identity

    ctx = _open(args)
    settings = ctx.settings
    if not settings.relay.enabled:
        raise ConfigError("relay: no relay is enabled (relay.enabled)")
    clock = SystemClock()
    identity = build_identity(settings, ctx.rules_file.current, ctx.db)
    started = ctx.book.start_now(args.campaign)
    # this process sends the new run only; the daemon (if one runs) helps, nothing doubles
    sender: CampaignSender = build_campaign_sender(
        settings,
        ctx.rules_file,
        ctx.db,
        clock,
        new_owner_id(),
        TemplateStore(settings.paths.templates),
        identity,
        instance_key(ctx.db, "message-id"),
        only_run=started.run_id,
    )
    sender.start()
    run = _latest(ctx, args.campaign)
    bar = _progress_bar(run["recipients"] if run else 0, args.no_progress)
    try:
        while run is not None and run["status"] == "running":
            time.sleep(0.5)
            run = _latest(ctx, args.campaign)
            if run is not None:
                bar.n = _done(run)
                bar.refresh()
    except KeyboardInterrupt:
        print("\nstopping; the campaign goes on in the daemon (or resume it)", file=sys.stderr)
    finally:
        bar.close()
        sender.stop()
        ctx.db.dispose()
    if run is not None:
        print(f"{args.campaign}: {run['status']} {json.dumps(run['sends'])}")
    return 0 if run is not None and run["status"] == "finished" else 1


def cmd_action(args: argparse.Namespace) -> int:
    ctx = _open(args)
    try:
        if args.campaign_command == "pause":
            changed = ctx.book.pause(args.campaign)
            print(f"{args.campaign}: paused ({changed} run(s))")
        elif args.campaign_command == "resume":
            changed = ctx.book.resume(args.campaign)
            print(f"{args.campaign}: resumed ({changed} run(s))")
        elif args.campaign_command == "cancel":
            changed = ctx.book.cancel(args.campaign)
            print(f"{args.campaign}: cancelled; {changed} recipient(s) not sent")
        else:
            changed = ctx.book.retry_failed(args.campaign, uncertain=args.uncertain)
            print(f"{args.campaign}: {changed} recipient(s) queued again")
    finally:
        ctx.db.dispose()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    ctx = _open(args)
    try:
        if args.watch:
            if not args.campaign:
                raise ConfigError("--watch needs a campaign name")
            return _watch(ctx, args.campaign)
        rows = ctx.book.status(args.campaign)
    finally:
        ctx.db.dispose()
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for campaign in rows:
        print(
            f"{campaign['name']} ({campaign['kind']}): {campaign['state']}"
            + (f", next {campaign['next_occurrence']}" if campaign["next_occurrence"] else "")
        )
        for run in campaign["runs"]:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(run["sends"].items()))
            print(
                f"  run {run['id']} {run['occurrence']}: {run['status']}; "
                f"{run['recipients']} recipients, {run['excluded']} suppressed; {counts}"
            )
            if run["detail"]:
                print(f"    {run['detail']}")
    return 0


def _watch(ctx: Context, name: str) -> int:
    run = _latest(ctx, name)
    if run is None:
        print(f"{name}: no run yet", file=sys.stderr)
        return 1
    bar = _progress_bar(run["recipients"], False)
    try:
        while True:
            bar.n = _done(run)
            bar.set_postfix_str(run["status"])
            bar.refresh()
            if run["status"] not in ("running", "paused"):
                break
            time.sleep(1.0)
            run = _latest(ctx, name) or run
    except KeyboardInterrupt:
        pass
    finally:
        bar.close()
    return 0


def register(sub: Any) -> None:
    """Add `mailcare campaign ...` to the command line."""
    campaign = sub.add_parser("campaign", help="newsletters and promotions")
    c_sub = campaign.add_subparsers(dest="campaign_command", required=True)

    save = c_sub.add_parser("save", help="store the campaigns of a YAML file (as drafts)")
    save.add_argument("file")
    save.add_argument("--schedule", action="store_true", help="and schedule them")
    save.set_defaults(func=cmd_save)

    schedule = c_sub.add_parser(
        "schedule", help="schedule a campaign file, a saved campaign, or one given by options"
    )
    schedule.add_argument("source", nargs="?", help="campaign YAML file or saved campaign name")
    schedule.add_argument("--name")
    schedule.add_argument("--kind", choices=("newsletter", "promotion"), default="newsletter")
    schedule.add_argument("--list")
    schedule.add_argument("--segment")
    schedule.add_argument("--template", help="templates/campaigns/<TEMPLATE>/")
    schedule.add_argument("--from", dest="sender")
    schedule.add_argument("--at", help='local time, e.g. "2026-12-01 09:00" (default: now)')
    schedule.add_argument("--timezone", default="UTC")
    schedule.add_argument("--local-time", action="store_true", help="at each recipient's time")
    schedule.add_argument("--repeat", help="daily, weekly, monthly or 'cron: M H DOM MON DOW'")
    schedule.add_argument("--late-start", help="skip an occurrence this late (e.g. 6h)")
    schedule.set_defaults(func=cmd_schedule)

    for name, text in (
        ("preview", "print a campaign's mail as one subscriber would get it"),
        ("test-send", "send one campaign mail to a test address now"),
    ):
        parser = c_sub.add_parser(name, help=text)
        parser.add_argument("campaign", help="saved campaign name or campaign YAML file")
        parser.add_argument("--subscriber", help="personalise for this subscriber's address")
        parser.add_argument("--language")
        if name == "preview":
            parser.add_argument("--html", action="store_true", help="show the HTML part")
            parser.add_argument("--raw", action="store_true", help="the whole message")
            parser.set_defaults(func=cmd_preview)
        else:
            parser.add_argument("--to", required=True)
            parser.set_defaults(func=cmd_test_send)

    send = c_sub.add_parser(
        "send", help="send a saved campaign now, from here (its schedule stays as it is)"
    )
    send.add_argument("campaign")
    send.add_argument("--no-progress", action="store_true")
    send.set_defaults(func=cmd_send)

    for name, text in (
        ("pause", "stop sending (nothing is lost; resume continues)"),
        ("resume", "continue a paused campaign"),
        ("cancel", "stop for good; unsent recipients are cancelled"),
        ("retry-failed", "send the failed recipients of the latest run again"),
    ):
        parser = c_sub.add_parser(name, help=text)
        parser.add_argument("campaign")
        if name == "retry-failed":
            parser.add_argument(
                "--uncertain",
                action="store_true",
                help="uncertain ones too (they may get a second copy)",
            )
        parser.set_defaults(func=cmd_action)

    status = c_sub.add_parser("status", help="campaigns, runs and per-state counts")
    status.add_argument("campaign", nargs="?")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="a progress bar until it ends")
    status.set_defaults(func=cmd_status)
