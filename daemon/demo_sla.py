"""The demo's service-level part: an agent answers through the submission port, another
conversation is resolved and its customer gets the satisfaction survey, then the report."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import select

from .app import App
from .database import Database
from .inbox import MESSAGES
from .sink import SmtpSink
from .sla import CLOCKS, NewEvent
from .sla_report import build_report
from .sla_report_format import format_table
from .threads import TicketTags

AGENT = "agent"
SLA_RULES = """\
sla:
  calendar: office
  from: "Acme SLA monitor <sla@acme.example>"
  leads: {{default: lead@acme.example}}
  policies:
    - {{name: standard, first_response: 4h, next_response: 8h, resolution: 40h}}
  survey: {{enabled: true, from: "Acme Customer Service <{support}>"}}
"""


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll predicate every 50 ms until it holds (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def sla_demo(app: App, db: Database, sink: SmtpSink, password: str, support: str) -> str:
    """Answer one request as an agent, resolve another, and return what the clocks say."""
    with db.reading() as conn:
        opened = conn.execute(
            select(
                CLOCKS.c.conversation_id,
                MESSAGES.c.message_id,
                MESSAGES.c.subject,
                MESSAGES.c.from_addr,
            )
            .join(MESSAGES, MESSAGES.c.conversation_id == CLOCKS.c.conversation_id)
            .where(MESSAGES.c.automated == "human")
            .order_by(CLOCKS.c.conversation_id, MESSAGES.c.id)
        ).all()
    firsts = list({row.conversation_id: row for row in reversed(opened)}.values())[::-1]
    if len(firsts) < 2 or app.submission is None or app.sla is None:
        return "Service levels: nothing to show"
    tags = TicketTags(app.rules.conversations.ticket_prefix)
    answered, resolved = firsts[0], firsts[1]
    before = sink.count
    reply = EmailMessage()
    reply["From"] = f"Ben from Acme <{support}>"
    reply["To"] = answered.from_addr
    reply["Subject"] = f"Re: {answered.subject} {tags.tag(answered.conversation_id)}"
    reply["Message-ID"] = make_msgid(domain="acme.example")
    reply["In-Reply-To"] = answered.message_id
    reply["References"] = answered.message_id
    reply.set_content("Hello,\n\nwe have found the problem and fixed it.\n\nBen")
    with smtplib.SMTP("127.0.0.1", app.submission.port, timeout=10) as client:
        client.login(AGENT, password)
        client.send_message(reply)
    with db.transaction() as conn:
        app.sla.record(
            conn,
            [
                NewEvent(
                    "demo:resolve",
                    resolved.conversation_id,
                    "resolved",
                    app.clock.now(),
                    "command",
                )
            ],
        )
    app.outbox.notify()
    wait_for(lambda: sink.count >= before + 2)
    with db.reading() as conn:
        rows = {
            row.conversation_id: row
            for row in conn.execute(
                select(CLOCKS).where(
                    CLOCKS.c.conversation_id.in_(
                        [answered.conversation_id, resolved.conversation_id]
                    )
                )
            )
        }
        report = build_report(conn, app.clock.now(), None, None, ["policy"], worst=3)
    first = rows[answered.conversation_id]
    calendar = app.sla.calendars.get(app.rules, "office")
    hours = "open" if calendar is not None and calendar.is_open(app.clock.now()) else "closed"
    lines = [
        "Service levels (business minutes on the office calendar, Europe/Berlin):",
        f"  {tags.tag(answered.conversation_id)}: an agent answered through the submission "
        f"port; first response recorded after {first.first_response_minutes or 0:.1f} "
        f"business minutes (the office is {hours} now), and the reply was relayed",
        f"  {tags.tag(resolved.conversation_id)}: resolved; satisfaction survey sent to "
        f"{resolved.from_addr}"
        if rows[resolved.conversation_id].status == "resolved"
        else f"  {tags.tag(resolved.conversation_id)}: not resolved",
        "",
        "mailcare sla report --by policy:",
        format_table(report),
    ]
    return "\n".join(lines)
