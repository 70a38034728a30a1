"""Real-world mail through the whole pipeline: machines get no auto-reply, people exactly one.

Reads ../shared/data/mail (skips cleanly without it). Each message is delivered to a
fresh database as if it was sent to our support address (its first To/Cc recipient is
taken to be ours), so threads and rate limits of the other files never decide the outcome.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from daemon.app import build_app
from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.inbox import Inbox
from daemon.message import parse_message
from daemon.outbox import OUTBOX
from daemon.rules import load_rules
from daemon.tables import Message
from tests.conftest import _copy_sqlite
from tests.helpers import settings_for

ROOT = Path(__file__).resolve().parent.parent
AUTOMATED = {"bounces", "autoreplies", "arf", "lists"}


def addressed_to(raw: bytes) -> str | None:
    """The first To/Cc address that is not the sender: the support address it was sent to."""
    message = parse_message(raw)
    sender = message.sender.addr.lower() if message.sender else ""
    for address in [*message.to, *message.cc]:
        if "@" in address.addr and address.addr.lower() != sender:
            return address.addr.lower()
    return None


@pytest.mark.slow
def test_machines_get_no_reply_and_people_exactly_one(
    shared_dir: Path, _sqlite_schema: Path, tmp_path: Path
) -> None:
    mail_dir = shared_dir / "data" / "mail"
    if not (mail_dir / "manifest.csv").exists():
        pytest.skip(f"{mail_dir / 'manifest.csv'} not found")
    with (mail_dir / "manifest.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["category"] in AUTOMATED | {"ordinary"}]
    base = load_rules(ROOT / "rules.yaml")
    clock = FrozenClock()
    db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    settings = settings_for(
        db_url,
        paths={"rules": str(ROOT / "rules.yaml"), "templates": str(ROOT / "templates")},
        relay={"enabled": True, "host": "127.0.0.1", "port": 2525, "tls": "none"},
    )
    replies: Counter[str] = Counter()
    unaddressed: list[str] = []
    wrong: list[str] = []
    for row in rows:
        (tmp_path / "db.sqlite3").unlink(missing_ok=True)
        _copy_sqlite(_sqlite_schema, tmp_path / "db.sqlite3")
        db = Database(db_url)
        try:
            path = shared_dir.parent / row["path"]
            raw = path.read_bytes()
            ours = addressed_to(raw)
            if ours is None:
                if row["category"] == "ordinary":
                    unaddressed.append(row["path"])
                ours = "support@example.com"
            identity = base.identity.model_copy(update={"addresses": [ours]})
            rules = base.model_copy(update={"identity": identity})
            app = build_app(settings, clock=clock, db=db, rules=rules, intake=False, sender=False)
            Inbox(db, clock).store_delivered(
                raw, channel="file", envelope_from=None, recipients=[ours], mailboxes=["support"]
            )
            while app.runner.run_once():
                pass
            with db.reading() as conn:
                pk = conn.execute(select(func.max(Message.id))).scalar_one()
                state, decision = conn.execute(
                    select(Message.state, Message.reply_decision).where(Message.id == pk)
                ).one()
                sent = conn.execute(
                    select(func.count()).select_from(OUTBOX).where(OUTBOX.c.message_pk == pk)
                ).scalar_one()
            replies[row["category"]] += sent
            if state != "done":
                wrong.append(f"{row['path']}: state {state}")
            elif row["category"] in AUTOMATED and sent != 0:
                wrong.append(f"{row['path']}: {sent} replies to {row['expected']}")
            elif row["category"] == "ordinary" and row["path"] not in unaddressed and sent != 1:
                wrong.append(f"{row['path']}: {sent} replies ({decision})")
        finally:
            db.dispose()
    print({"replies": dict(replies), "unaddressed": len(unaddressed)})
    assert not wrong, "\n".join(wrong)
    ordinary = sum(1 for row in rows if row["category"] == "ordinary")
    # the rest have no From or To at all, or are sent from the address they are sent to
    assert replies["ordinary"] == ordinary - len(unaddressed) >= 25
