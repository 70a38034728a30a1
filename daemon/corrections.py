"""Corrections of department and urgency by people: recorded, applied, learned from IMAP moves."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy import Connection, Table, exists, select, update

from .database import Database
from .folder_scan import FolderScan, header_of
from .folders import FolderLedger
from .inbox import DELIVERIES, MESSAGES
from .interfaces import Clock
from .message import extract_message_id
from .rules import Routing, Rules
from .settings import Mailbox, Settings
from .tables import Correction

if TYPE_CHECKING:
    from .routing import Forwarder

log = logging.getLogger(__name__)

CORRECTIONS: Table = Correction.__table__  # type: ignore[assignment]
HEADS = ("department", "urgency")
HEADER_ITEM = b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
SWEEP_BATCH = 500


def record_correction(
    conn: Connection, message_pk: int, head: str, label: str, source: str, now: datetime
) -> bool:
    """Record a correction and apply it to the message; False when the label is already current.

    Any correction clears `triage`: a person has looked at the message.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    if not label:
        raise ValueError("a correction needs a label")
    query = select(MESSAGES.c[head]).where(MESSAGES.c.id == message_pk)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise ValueError(f"no message {message_pk}")
    previous = row[0]
    if previous == label:
        return False
    conn.execute(
        CORRECTIONS.insert().values(
            message_pk=message_pk,
            head=head,
            previous=previous,
            label=label,
            source=source,
            created_at=now,
        )
    )
    conn.execute(
        update(MESSAGES).where(MESSAGES.c.id == message_pk).values({head: label, "triage": False})
    )
    return True


def _words(value: str | None) -> list[str]:
    return (value or "").split()


def reroute(
    conn: Connection,
    message_pk: int,
    routing: Routing,
    located: tuple[str, str] | None = None,
) -> int:
    """Route the message's IMAP copies again after a correction; return how many changed.

    The new department's folder and keywords replace those of the earlier route, whose
    keywords come off. `located` is (mailbox, folder) where the message is known to be now
    (an agent moved it there); otherwise, and for its copies in other mailboxes, it is where
    the earlier route left it. A message the classify step has not seen yet is left alone:
    that step applies the correction itself.
    """
    message = conn.execute(
        select(
            MESSAGES.c.department, MESSAGES.c.urgency, MESSAGES.c.triage, MESSAGES.c.route_reason
        ).where(MESSAGES.c.id == message_pk)
    ).one()
    if message.route_reason is None:
        return 0
    folder, keywords = routing.visible(message.department, message.urgency, bool(message.triage))
    rows = conn.execute(
        select(
            DELIVERIES.c.id,
            DELIVERIES.c.route_state,
            DELIVERIES.c.route_folder,
            DELIVERIES.c.route_keywords,
            DELIVERIES.c.route_from,
            DELIVERIES.c.route_drop,
            DELIVERIES.c.mailbox,
        ).where(DELIVERIES.c.message_pk == message_pk, DELIVERIES.c.channel == "imap")
    ).all()
    changed = 0
    for row in rows:
        if row.route_state == "done":
            where, earlier = row.route_folder, _words(row.route_keywords)
        else:  # not carried out yet, or only partly: its keywords may or may not be set
            where, earlier = row.route_from, _words(row.route_drop) + _words(row.route_keywords)
        if located is not None and row.mailbox == located[0]:
            where = located[1]
        drop = [k for k in dict.fromkeys(earlier) if k not in keywords]
        target = folder or where  # a department without a folder: the message stays put
        applied = _words(row.route_keywords) if row.route_state == "done" else []
        if (
            row.route_state in ("done", "none")
            and target == where
            and not drop
            and set(keywords) <= set(applied)
        ):
            continue  # nothing on the server would change
        conn.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == row.id)
            .values(
                route_state="pending",
                route_folder=target,
                route_keywords=" ".join(keywords) or None,
                route_from=where,
                route_drop=" ".join(drop) or None,
            )
        )
        changed += 1
    return changed


def find_messages(conn: Connection, ref: str) -> list[Any]:
    """Messages named by a numeric id or a Message-ID (with or without <>)."""
    ref = ref.strip()
    columns = (MESSAGES.c.id, MESSAGES.c.message_id, MESSAGES.c.department, MESSAGES.c.urgency)
    if ref.isdigit():
        return list(conn.execute(select(*columns).where(MESSAGES.c.id == int(ref))))
    message_id = ref if ref.startswith("<") else f"<{ref.strip('<>')}>"
    query = select(*columns).where(MESSAGES.c.message_id == message_id)
    return list(conn.execute(query.order_by(MESSAGES.c.id)))


def listing(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The newest corrections first, with the message's Message-ID."""
    query = (
        select(CORRECTIONS, MESSAGES.c.message_id)
        .join(MESSAGES, MESSAGES.c.id == CORRECTIONS.c.message_pk)
        .order_by(CORRECTIONS.c.created_at.desc(), CORRECTIONS.c.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": row.id,
            "message": row.message_pk,
            "message_id": row.message_id,
            "head": row.head,
            "previous": row.previous,
            "label": row.label,
            "source": row.source,
            "created_at": row.created_at.isoformat(),
        }
        for row in conn.execute(query)
    ]


def department_folders(routing: Routing, mailbox: Mailbox) -> dict[str, str]:
    """Folder -> department for folders that name one department and are not intake folders."""
    owners: dict[str, list[str]] = {}
    for name, department in routing.departments.items():
        if department.folder:
            owners.setdefault(department.folder, []).append(name)
    return {
        folder: names[0]
        for folder, names in owners.items()
        if len(names) == 1 and folder not in mailbox.folders
    }


class MoveSweep:
    """Learns corrections from messages that people moved into another department's folder."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        ledger: FolderLedger,
        mailbox: Mailbox,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.clock = clock
        self.mailbox = mailbox
        self.forwarder = forwarder
        self.learned = 0
        self.folders = FolderScan(db, clock, ledger, mailbox.name)

    def run(self, client: Any, routing: Routing) -> bool:
        """Look at new UIDs of each department folder; True when another folder was selected."""
        self.folders.selected = False
        for folder, department in department_folders(routing, self.mailbox).items():
            try:
                self._sweep(client, folder, department, routing)
            except IMAPClientError as exc:
                if isinstance(exc, IMAPClientAbortError):
                    raise
                log.warning("imap:%s/%s: sweep for corrections: %s", self.mailbox.name, folder, exc)
        return self.folders.selected

    def _sweep(self, client: Any, folder: str, department: str, routing: Routing) -> None:
        """Fetch the Message-IDs of new UIDs in folder and record what they correct."""

        def correct(conn: Connection, response: dict[int, Any], *_: int) -> None:
            message_ids = {
                mid
                for data in response.values()
                if (mid := extract_message_id(header_of(data))) is not None
            }
            self.learned += self.learn(conn, department, sorted(message_ids), folder, routing)

        self.folders.scan(client, folder, [HEADER_ITEM], SWEEP_BATCH, correct)

    def learn(
        self,
        conn: Connection,
        department: str,
        message_ids: Sequence[str],
        folder: str,
        routing: Routing,
    ) -> int:
        """Record a correction for each known message of this mailbox filed elsewhere.

        The message stays in `folder`, where the agent put it; its keywords become those
        of its new department.
        """
        if not message_ids:
            return 0
        here = exists().where(
            DELIVERIES.c.message_pk == MESSAGES.c.id, DELIVERIES.c.mailbox == self.mailbox.name
        )
        # mailcare itself left it here with a route about to take it on (a route that a
        # correction replaced while it ran): no person moved it
        leaving = exists().where(
            DELIVERIES.c.message_pk == MESSAGES.c.id,
            DELIVERIES.c.route_state == "pending",
            DELIVERIES.c.route_from == folder,
        )
        rows = conn.execute(
            select(MESSAGES.c.id, MESSAGES.c.message_id, MESSAGES.c.department).where(
                MESSAGES.c.message_id.in_(list(message_ids)),
                MESSAGES.c.department.is_not(None),  # never classified: nothing to correct
                MESSAGES.c.department != department,
                here,
                ~leaving,
            )
        ).all()
        now = self.clock.now()
        count = 0
        for row in rows:
            if record_correction(conn, row.id, "department", department, "imap-move", now):
                reroute(conn, row.id, routing, located=(self.mailbox.name, folder))
                if self.forwarder is not None:
                    self.forwarder.after_correction(conn, row.id, routing)
                count += 1
                log.info(
                    "%s: moved by a person into %s's folder: department %s -> %s",
                    row.message_id,
                    department,
                    row.department,
                    department,
                )
        return count


# -- the `mailcare relabel` and `mailcare corrections` commands --------------------------------


def _database(args: argparse.Namespace) -> tuple[Database, Rules, Settings]:
    from .rules import load_rules
    from .settings import load_settings

    settings = load_settings(Path(args.config) if args.config else None)
    db = Database(settings.database_url)
    db.check_schema()
    return db, load_rules(settings.paths.rules), settings


def _forwarder(db: Database, rules: Rules, settings: Settings) -> Forwarder | None:
    """What forwards a relabelled message to its new department, as the daemon would."""
    if not settings.relay.enabled:
        return None  # nothing would send it
    from .app import build_identity
    from .clock import SystemClock
    from .folders import new_owner_id
    from .keys import instance_key
    from .outbox import Outbox
    from .routing import Forwarder

    outbox = Outbox(db, SystemClock(), new_owner_id())
    return Forwarder(outbox, build_identity(settings, rules, db), instance_key(db, "message-id"))


def _unknown_department(label: str, rules: Rules) -> str | None:
    """Why label is not a department of rules.yaml, or None (any label when none are set)."""
    routing = rules.routing
    known = set(routing.departments) | set(rules.labels.department.values())
    if not known:
        return None
    known.add(routing.triage_department)
    if label in known:
        return None
    return f"unknown department {label!r} (rules.yaml has: {', '.join(sorted(known))})"


def cmd_relabel(args: argparse.Namespace) -> int:
    from .clock import SystemClock

    changes = [(head, getattr(args, head)) for head in HEADS if getattr(args, head)]
    if not changes:
        print("give --department and/or --urgency", file=sys.stderr)
        return 2
    db, rules, settings = _database(args)
    try:
        forwarder = _forwarder(db, rules, settings)
        problem = _unknown_department(args.department, rules) if args.department else None
        if problem:
            print(f"mailcare: {problem}", file=sys.stderr)
            return 2
        with db.transaction() as conn:
            found = find_messages(conn, args.message)
            for row in found:
                relabelled = False
                for head, label in changes:
                    now = SystemClock().now()
                    changed = record_correction(conn, row.id, head, label, "cli", now)
                    relabelled |= changed
                    before = getattr(row, head) or "-"
                    outcome = f"{before} -> {label}" if changed else f"already {label}"
                    print(f"{row.id}\t{row.message_id or '-'}\t{head}: {outcome}")
                if not relabelled:
                    continue
                if reroute(conn, row.id, rules.routing):
                    print(f"{row.id}\t{row.message_id or '-'}\tIMAP: keywords and folder follow")
                if args.department and forwarder is not None:
                    to = forwarder.after_correction(conn, row.id, rules.routing)
                    if to:
                        print(f"{row.id}\t{row.message_id or '-'}\tforwarded to {to}")
    finally:
        db.dispose()
    if not found:
        print(f"mailcare: no message {args.message}", file=sys.stderr)
        return 1
    return 0


def cmd_corrections_list(args: argparse.Namespace) -> int:
    db, _rules, _settings = _database(args)
    try:
        with db.reading() as conn:
            rows = listing(conn, args.limit)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no corrections yet")
    for row in rows:
        print(
            f"{row['created_at']}\t{row['message']}\t{row['message_id'] or '-'}\t{row['head']}: "
            f"{row['previous'] or '-'} -> {row['label']}\t{row['source']}"
        )
    return 0


def register(sub: Any) -> None:
    """Add `relabel` and `corrections` to the `mailcare` parser."""
    relabel = sub.add_parser("relabel", help="correct a message's department and/or urgency")
    relabel.add_argument("message", metavar="ID_OR_MESSAGE_ID", help="number or Message-ID")
    relabel.add_argument("--department")
    relabel.add_argument("--urgency")
    relabel.set_defaults(func=cmd_relabel)

    corrections = sub.add_parser("corrections", help="corrections made by people")
    c_sub = corrections.add_subparsers(dest="c_command", required=True, metavar="ACTION")
    c_list = c_sub.add_parser("list", help="newest first")
    c_list.add_argument("--limit", type=int, default=100)
    c_list.add_argument("--json", action="store_true")
    c_list.set_defaults(func=cmd_corrections_list)
