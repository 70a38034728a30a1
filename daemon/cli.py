"""The `mailcare` command."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .admin import register as register_admin
from .audience_cli import register as register_audience
from .campaign_cli import register as register_campaign
from .clock import SystemClock
from .corrections import register as register_corrections
from .database import Database
from .errors import MailcareError
from .settings import Settings, load_settings
from .sla_cli import register as register_sla
from .workers import configure_logging

log = logging.getLogger("mailcare")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


def cmd_run(args: argparse.Namespace) -> int:
    from .app import build_app
    from .workers import RunnerProcesses

    settings = _settings(args)
    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    db.check_schema()
    # with several runner processes, this one only takes mail in and they process it;
    # they are started before this process has threads or database connections
    runners = RunnerProcesses(settings, settings.runner.processes)
    if "classify" in settings.runner.steps:
        import classifiers.handle  # noqa: F401  loaded once, before the runners fork
    if settings.runner.processes > 1:
        db.dispose()
        runners.start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app = build_app(settings, db=db)
    app.start(runner=not runners.processes)
    log.info(
        "mailcare running as %s: %d folder(s), listener %s, %d runner process(es)",
        app.owner,
        len(app.imap.workers),
        "on" if app.listener else "off",
        len(runners.processes) or 1,
    )
    while not stop.wait(0.5):
        runners.watch()
    app.stop()
    runners.stop()
    log.info("stopped cleanly")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = Database(settings.database_url)
    db.upgrade()
    print(f"database at {db.engine.url.render_as_string(hide_password=True)} is up to date")
    db.dispose()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import collect, render

    settings = _settings(args)
    db = Database(settings.database_url)
    db.check_schema()
    report = collect(db, SystemClock())
    db.dispose()
    if args.json:
        print(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        print(render(report))
    return 0


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    from .quarantine import list_quarantined

    db = Database(_settings(args).database_url)
    items = list_quarantined(db)
    db.dispose()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": q.pk,
                        "message_id": q.message_id,
                        "mailbox": q.mailbox,
                        "size": q.size,
                        "received_at": q.received_at.isoformat(),
                        "quarantined_at": q.quarantined_at.isoformat()
                        if q.quarantined_at
                        else None,
                        "reason": q.reason,
                    }
                    for q in items
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    if not items:
        print("no quarantined messages")
    for q in items:
        print(f"{q.pk}\t{q.message_id or '-'}\t{q.size} bytes\t{q.reason}")
    return 0


def cmd_quarantine_retry(args: argparse.Namespace) -> int:
    from .quarantine import retry

    if not args.all and not args.ids:
        print("give message ids or --all", file=sys.stderr)
        return 2
    db = Database(_settings(args).database_url)
    count = retry(db, None if args.all else args.ids)
    db.dispose()
    print(f"{count} message(s) queued for processing again")
    return 0


def cmd_quarantine_show(args: argparse.Namespace) -> int:
    from .quarantine import raw_bytes

    db = Database(_settings(args).database_url)
    raw = raw_bytes(db, args.id)
    db.dispose()
    if raw is None:
        print(f"no message {args.id}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(raw)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from .inbox import Inbox

    db = Database(_settings(args).database_url)
    db.check_schema()
    inbox = Inbox(db)
    stored = known = 0
    for name in args.files:
        raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        outcome = inbox.store_delivered(
            raw,
            channel="file",
            envelope_from=None,
            recipients=[args.mailbox],
            mailboxes=[args.mailbox],
        )
        stored += outcome.stored
        known += outcome.known
    db.dispose()
    print(f"{stored} stored, {known} already known")
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    from .admin import rules_problems
    from .rules import load_rules

    settings = _settings(args)
    path = Path(args.file) if args.file else settings.paths.rules
    if not path.exists():
        print(f"{path}: not found", file=sys.stderr)
        return 1
    problems = rules_problems(load_rules(path), settings)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{path}: ok")
    return 0


def cmd_rules_schema(args: argparse.Namespace) -> int:
    from .rules import json_schema

    sys.stdout.write(json_schema())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.workdir) if args.workdir else None, keep=args.keep)


# the classifier commands import scikit-learn, so they are loaded only when asked for
CLASSIFIER_COMMANDS = {
    "train": "train a department/urgency classifier from labelled CSV",
    "evaluate": "evaluate a classifier on labelled CSV",
    "classify": "classify one message (FILE.eml or stdin)",
}


def _command_of(argv: Sequence[str]) -> str | None:
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailcare", description=__doc__)
    parser.add_argument(
        "--config", help="settings file (default: $MAILCARE_CONFIG or ./mailcare.yaml)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon until SIGTERM")
    run.set_defaults(func=cmd_run)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="create or migrate the schema").set_defaults(
        func=cmd_db_upgrade
    )

    status = sub.add_parser("status", help="per-mailbox cursor, lag, last success and error")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    quarantine = sub.add_parser("quarantine", help="messages that could not be processed")
    q_sub = quarantine.add_subparsers(dest="q_command", required=True, metavar="ACTION")
    q_list = q_sub.add_parser("list", help="list quarantined messages and why")
    q_list.add_argument("--json", action="store_true")
    q_list.set_defaults(func=cmd_quarantine_list)
    q_retry = q_sub.add_parser("retry", help="process quarantined messages again")
    q_retry.add_argument("ids", nargs="*", type=int)
    q_retry.add_argument("--all", action="store_true")
    q_retry.set_defaults(func=cmd_quarantine_retry)
    q_show = q_sub.add_parser("show", help="write a stored message's raw bytes to stdout")
    q_show.add_argument("id", type=int)
    q_show.set_defaults(func=cmd_quarantine_show)

    ingest = sub.add_parser("ingest", help="store .eml files as if delivered (- for stdin)")
    ingest.add_argument("files", nargs="+")
    ingest.add_argument("--mailbox", default="file")
    ingest.set_defaults(func=cmd_ingest)

    rules = sub.add_parser("rules", help="rules.yaml tools")
    r_sub = rules.add_subparsers(dest="r_command", required=True, metavar="ACTION")
    r_check = r_sub.add_parser("check", help="validate rules.yaml (errors name line and column)")
    r_check.add_argument("file", nargs="?")
    r_check.set_defaults(func=cmd_rules_check)
    r_sub.add_parser("schema", help="print the JSON Schema of rules.yaml").set_defaults(
        func=cmd_rules_schema
    )

    register_admin(sub)
    register_corrections(sub)
    register_sla(sub)
    register_audience(sub)
    register_campaign(sub)

    demo = sub.add_parser("demo", help="run a self-contained demo with embedded servers")
    demo.add_argument("--workdir", help="keep the demo's files here")
    demo.add_argument("--keep", action="store_true", help="do not delete the work directory")
    demo.set_defaults(func=cmd_demo)

    if _command_of(argv) in CLASSIFIER_COMMANDS:
        from classifiers.cli import register

        from .retrain import cmd_train_from_history

        register(sub, history=cmd_train_from_history)
    else:
        for name, text in CLASSIFIER_COMMANDS.items():
            sub.add_parser(name, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mailcare` console command."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    try:
        return int(args.func(args))
    except MailcareError as exc:
        print(f"mailcare: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
