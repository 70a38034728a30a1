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

from .app import build_app, free_port
from .database import Database
from .demo_campaign import MARKETING_RULES, UNSUBSCRIBE, campaign_demo
from .demo_mail import SALES, SUPPORT, Sample, samples
from .demo_sla import AGENT, SLA_RULES, sla_demo
from .embedded import EmbeddedImapServer
from .inbox import MESSAGES
from .outbox import OUTBOX
from .settings import (
    Http,
    Intake,
    Mailbox,
    Paths,
    Relay,
    Secret,
    Settings,
    Submission,
    SubmissionUser,
)
from .sink import SmtpSink
from .status import collect, render
from .tables import Attachment, Contact, Conversation

PASSWORD_ENV = "MAILCARE_DEMO_PASSWORD"
AGENT_ENV = "MAILCARE_DEMO_AGENT_PASSWORD"
ROOT = Path(__file__).resolve().parent.parent

DEMO_RULES = (
    f"""\
version: 1
identity:
  company: {{name: Acme Customer Service, signature: "Acme Ltd · https://acme.example/help"}}
calendars:
  office:
    timezone: Europe/Berlin
    hours: {{mon-fri: ["09:00-12:30", "13:30-18:00"]}}
    holidays: {{country: DE}}
auto_replies:
  rules:
    - name: acknowledge
      template: acknowledge
      from: "Acme Customer Service <{SUPPORT}>"
      calendar: office
      answer_within: {{default: 480}}
"""
    + SLA_RULES.format(support=SUPPORT)
    + MARKETING_RULES
)

# machine mail the demo adds: none of it may be answered
MACHINE_MAIL = [
    (
        "out-of-office",
        b"From: Lena Vogel <lena.vogel@customer.example>\r\nTo: "
        + SUPPORT.encode()
        + b"\r\nSubject: Automatic reply: Your order\r\nAuto-Submitted: auto-replied\r\n"
        b"Message-ID: <ooo-1@customer.example>\r\n\r\nI am out of the office until Monday.\r\n",
    ),
    (
        "bounce",
        b"From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r\nTo: "
        + SUPPORT.encode()
        + b"\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <bounce-1@mx.customer.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        b"Final-Recipient: rfc822; old.address@customer.example\r\nAction: failed\r\n"
        b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n--b--\r\n",
    ),
]


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
        first = (
            select(func.min(MESSAGES.c.id)).group_by(MESSAGES.c.conversation_id).scalar_subquery()
        )
        routes = {
            r.conversation_id: r
            for r in conn.execute(
                select(
                    MESSAGES.c.conversation_id,
                    MESSAGES.c.department,
                    MESSAGES.c.urgency,
                    MESSAGES.c.triage,
                ).where(MESSAGES.c.id.in_(first))
            )
        }
        attachments = conn.execute(
            select(Attachment.filename, Attachment.content_type, Attachment.size)
        ).all()
        contacts = conn.execute(
            select(Contact.address, Contact.message_count, Contact.conversation_count)
            .order_by(Contact.message_count.desc(), Contact.address)
            .limit(5)
        ).all()
        contact_total = conn.execute(select(func.count()).select_from(Contact)).scalar_one()
    lines.append(
        f"Conversations ({len(conversations)}): department/urgency of the first message "
        "(* = the model was unsure: needs triage)"
    )
    for conv in conversations:
        who = f"{conv.name} <{conv.address}>" if conv.name else (conv.address or "?")
        tag = f"[{prefix}#{conv.id}]"
        route = routes.get(conv.id)
        routed = "-"
        if route is not None and route.department:
            routed = f"{route.department}/{route.urgency or '?'}" + ("*" if route.triage else "")
        lines.append(
            f"  {tag:<9} {languages.get(conv.id) or '?':<3} {conv.message_count} msg  "
            f"{routed:<28} {conv.subject[:44]:<44}  {who}"
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


def _wait_until_sent(db: Database, sink: SmtpSink, timeout: float = 30.0) -> int:
    """Wait until every queued auto-reply has reached the relay; return how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.reading() as conn:
            rows: dict[str, int] = dict(
                conn.execute(select(OUTBOX.c.state, func.count()).group_by(OUTBOX.c.state)).all()
            )
        if not rows.get("queued") and not rows.get("sending") and sink.count >= rows.get("sent", 0):
            return int(rows.get("sent", 0))
        time.sleep(0.1)
    raise TimeoutError("the auto-replies were not sent within 30 seconds")


def _replies_report(db: Database, sink: SmtpSink, sent: int) -> str:
    from email import message_from_bytes, policy

    lines = [f"Auto-replies sent to the relay: {sent}"]
    for received in sink.messages[:6]:
        reply = message_from_bytes(received.data, policy=policy.default)
        lines.append(f"  to {reply['To']}: {reply['Subject']}")
    if sent > 6:
        lines.append(f"  ... and {sent - 6} more")
    with db.reading() as conn:
        unanswered = conn.execute(
            select(MESSAGES.c.subject, MESSAGES.c.reply_decision)
            .where(MESSAGES.c.reply_decision.not_like("auto-reply by rule%"))
            .order_by(MESSAGES.c.id)
        ).all()
    lines.append("")
    lines.append(f"Not answered automatically ({len(unanswered)}), and why:")
    for subject, reason in unanswered:
        lines.append(f"  {(subject or '')[:40]:<40}  {(reason or '')[:90]}")
    return "\n".join(lines)


def run_demo(workdir: Path | None = None, keep: bool = False) -> int:
    """Run the whole demo and print what happened; returns the exit status."""
    own_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix="mailcare-demo-")) if workdir is None else workdir
    base.mkdir(parents=True, exist_ok=True)
    imap = EmbeddedImapServer().start()
    sink = SmtpSink(hostname="relay.demo").start()
    (base / "rules.yaml").write_text(DEMO_RULES, encoding="utf-8")
    os.environ[PASSWORD_ENV] = "demo-password"
    os.environ[AGENT_ENV] = "demo-agent-password"
    imap.add_user("support", os.environ[PASSWORD_ENV])
    web_port = free_port()
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
        intake=Intake(
            enabled=True, protocol="lmtp", port=0, recipients=[SUPPORT, SALES, UNSUBSCRIBE]
        ),
        http=Http(enabled=True, port=web_port, public_url=f"http://127.0.0.1:{web_port}"),
        paths=Paths(
            rules=base / "rules.yaml", templates=ROOT / "templates", models=ROOT / "models"
        ),
        relay=Relay(enabled=True, host="127.0.0.1", port=sink.port, tls="none", idle_wait=0.1),
        submission=Submission(
            enabled=True,
            port=0,
            tls="none",
            users=[SubmissionUser(username=AGENT, password=Secret(env=AGENT_ENV))],
        ),
    ).resolve(base)
    db = Database(settings.database_url)
    db.upgrade()
    app = build_app(settings, db=db)
    mail = samples()
    print("mailcare demo")
    print(f"  embedded IMAP server (pymap, in memory) on 127.0.0.1:{imap.port}")
    print(f"  SMTP relay for outgoing mail (an in-memory sink) on 127.0.0.1:{sink.port}")
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
            for _, raw in MACHINE_MAIL:
                client.append("INBOX", raw)
        for sample in mail:
            if sample.via == "lmtp":
                replies = _deliver_lmtp(app.listener.port, sample)
                if len(sample.recipients) > 1 or sample.key.endswith("again"):
                    shown = "; ".join(f"{code} {text.decode()[:30]}" for code, text in replies)
                    print(f"  LMTP {sample.key} to {', '.join(sample.recipients)}: {shown}")
        by_imap = sum(1 for s in mail if s.via == "imap")
        print(f"  delivered {by_imap} messages by IMAP APPEND and {len(mail) - by_imap} by LMTP")
        distinct = len({s.raw for s in mail}) + len(MACHINE_MAIL)
        _wait_until_processed(db, distinct)
        sent = _wait_until_sent(db, sink)
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
        print(_replies_report(db, sink, sent))
        print()
        print(sla_demo(app, db, sink, os.environ[AGENT_ENV], SUPPORT))
        print()
        print(campaign_demo(app, db, sink, app.listener.port))
        print()
        print("mailcare status:")
        print(render(collect(db, app.clock)))  # after the SLA part changed the clocks
    finally:
        app.stop()
        imap.stop()
        sink.stop()
        if own_dir and not keep:
            shutil.rmtree(base, ignore_errors=True)
        elif keep or not own_dir:
            print(f"\n(files kept in {base})")
    return 0
