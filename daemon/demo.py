"""`mailcare demo`: embedded servers, sample mail in English and Chinese, the daemon, a report."""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile
import time
from pathlib import Path

from imapclient import IMAPClient
from sqlalchemy import func, select

from .app import build_app
from .database import Database
from .demo_mail import SALES, SUPPORT, Sample, samples
from .embedded import EmbeddedImapServer
from .inbox import MESSAGES
from .settings import Intake, Mailbox, Secret, Settings
from .status import collect, render
from .tables import Attachment, Contact, Conversation

PASSWORD_ENV = "MAILCARE_DEMO_PASSWORD"


def _deliver_lmtp(port: int, sample: Sample) -> list[tuple[int, bytes]]:
    """Hand one message to the LMTP listener; LMTP answers once per recipient."""
    with smtplib.LMTP("127.0.0.1", port) as client:
        client.ehlo_or_helo_if_needed()
        client.mail("customer-mail@relay.example")
        for rcpt in sample.recipients:
            client.rcpt(rcpt)
        replies = [client.data(sample.raw)]
        replies += [client.getreply() for _ in sample.recipients[1:]]
    return replies


def _wait_until_processed(db: Database, expected: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.reading() as conn:
            states: dict[str, int] = dict(
                conn.execute(
                    select(MESSAGES.c.state, func.count()).group_by(MESSAGES.c.state)
                ).all()
            )
        pending = states.get("new", 0) + states.get("processing", 0)
        if sum(states.values()) >= expected and pending == 0:
            return
        time.sleep(0.1)
    raise TimeoutError("the demo mail was not processed within a minute")


def _report(db: Database, prefix: str) -> str:
    lines = []
    with db.reading() as conn:
        conversations = conn.execute(
            select(
                Conversation.id,
                Conversation.subject,
                Conversation.message_count,
                Contact.address,
                Contact.name,
            )
            .join(Contact, Contact.id == Conversation.contact_id, isouter=True)
            .order_by(Conversation.id)
        ).all()
        languages = dict(
            conn.execute(
                select(MESSAGES.c.conversation_id, func.max(MESSAGES.c.language)).group_by(
                    MESSAGES.c.conversation_id
                )
            ).all()
        )
        attachments = conn.execute(
            select(Attachment.filename, Attachment.content_type, Attachment.size)
        ).all()
        contacts = conn.execute(
            select(Contact.address, Contact.message_count, Contact.conversation_count)
            .order_by(Contact.message_count.desc(), Contact.address)
            .limit(5)
        ).all()
        contact_total = conn.execute(select(func.count()).select_from(Contact)).scalar_one()
    lines.append(f"Conversations ({len(conversations)}):")
    for conv in conversations:
        who = f"{conv.name} <{conv.address}>" if conv.name else (conv.address or "?")
        tag = f"[{prefix}#{conv.id}]"
        lines.append(
            f"  {tag:<9} {languages.get(conv.id) or '?':<3} {conv.message_count} msg  "
            f"{conv.subject[:48]:<48}  {who}"
        )
    lines.append("")
    lines.append(f"Attachments recorded: {len(attachments)}")
    for name, ctype, size in attachments:
        lines.append(f"  {name} ({ctype}, {size} bytes)")
    lines.append("")
    lines.append(f"Customer archive: {contact_total} contacts; most active:")
    for address, messages, convs in contacts:
        lines.append(f"  {address}: {messages} messages in {convs} conversation(s)")
    return "\n".join(lines)


def run_demo(workdir: Path | None = None, keep: bool = False) -> int:
    """Run the whole demo and print what happened; returns the exit status."""
    own_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix="mailcare-demo-")) if workdir is None else workdir
    base.mkdir(parents=True, exist_ok=True)
    imap = EmbeddedImapServer().start()
    os.environ[PASSWORD_ENV] = "demo-password"
    imap.add_user("support", os.environ[PASSWORD_ENV])
    settings = Settings(
        database_url=f"sqlite:///{base / 'mailcare.sqlite3'}",
        mailboxes=[
            Mailbox(
                name="support",
                host="127.0.0.1",
                port=imap.port,
                tls="none",
                username="support",
                password=Secret(env=PASSWORD_ENV),
                address=SUPPORT,
                # pymap sends IDLE responses in pieces that imapclient's IDLE reader
                # trips over (mailcare then reconnects); polling keeps the demo quiet
                idle="never",
                poll_interval=0.5,
            )
        ],
        intake=Intake(enabled=True, protocol="lmtp", port=0, recipients=[SUPPORT, SALES]),
    ).resolve(base)
    db = Database(settings.database_url)
    db.upgrade()
    app = build_app(settings, db=db)
    mail = samples()
    print("mailcare demo")
    print(f"  embedded IMAP server (pymap, in memory) on 127.0.0.1:{imap.port}")
    try:
        app.start()
        assert app.listener is not None
        print(f"  LMTP listener on 127.0.0.1:{app.listener.port}")
        print(f"  database {settings.database_url}")
        print()
        started = time.monotonic()
        with IMAPClient("127.0.0.1", port=imap.port, ssl=False) as client:
            client.login("support", os.environ[PASSWORD_ENV])
            for sample in mail:
                if sample.via == "imap":
                    client.append("INBOX", sample.raw)
        for sample in mail:
            if sample.via == "lmtp":
                replies = _deliver_lmtp(app.listener.port, sample)
                if len(sample.recipients) > 1 or sample.key.endswith("again"):
                    shown = "; ".join(f"{code} {text.decode()[:30]}" for code, text in replies)
                    print(f"  LMTP {sample.key} to {', '.join(sample.recipients)}: {shown}")
        by_imap = sum(1 for s in mail if s.via == "imap")
        print(f"  delivered {by_imap} messages by IMAP APPEND and {len(mail) - by_imap} by LMTP")
        distinct = len({s.raw for s in mail})
        _wait_until_processed(db, distinct)
        elapsed = time.monotonic() - started
        status = collect(db, app.clock)
        print(
            f"  stored and processed {status.queue['done']} distinct messages in "
            f"{elapsed:.1f}s ({len(mail) - distinct} duplicate ignored), "
            f"{status.queue['quarantined']} quarantined"
        )
        print()
        print(_report(db, app.rules.conversations.ticket_prefix))
        print()
        print("mailcare status:")
        print(render(status))
    finally:
        app.stop()
        imap.stop()
        if own_dir and not keep:
            shutil.rmtree(base, ignore_errors=True)
        elif keep or not own_dir:
            print(f"\n(files kept in {base})")
    return 0
