"""The demo's campaign part: four subscribers get a newsletter once each; one leaves with the
one-click link of the web endpoint, another by mail to the unsubscribe address."""

from __future__ import annotations

import smtplib
import urllib.request
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import select

from .app import App
from .audience_import import NewSubscriber, add_members
from .campaign_config import CampaignDefinition
from .campaign_ledger import RUNS
from .database import Database
from .demo_sla import wait_for
from .sink import SmtpSink
from .suppressions import SUPPRESSIONS

UNSUBSCRIBE = "unsubscribe@acme.example"
MARKETING_RULES = f"""\
marketing:
  from: "Acme News <news@acme.example>"
  unsubscribe_address: {UNSUBSCRIBE}
  lists:
    news: {{title: Acme News, double_opt_in: false}}
  segments:
    vip: {{tiers: [vip]}}
"""
PEOPLE = [
    NewSubscriber("anna.schmidt@customer.example", "Anna Schmidt", "en", tier="vip"),
    NewSubscriber("wang.fang@customer.example", "王芳", "zh", tier="ordinary"),
    NewSubscriber("bob.jones@customer.example", "Bob Jones", "en", tier="ordinary"),
    NewSubscriber("chloe.dubois@northwind.example", "Chloé Dubois", "fr", tier="vip"),
]


def _status(db: Database) -> str | None:
    with db.reading() as conn:
        return conn.execute(select(RUNS.c.status).order_by(RUNS.c.id.desc())).scalar()


def campaign_demo(app: App, db: Database, sink: SmtpSink, lmtp_port: int) -> str:
    """Send a newsletter, unsubscribe two recipients, and say what happened."""
    if app.campaigns is None:
        return "Campaigns: nothing to show (no relay)"
    rules = app.rules
    now = app.clock.now()
    with db.transaction() as conn:
        add_members(
            conn,
            "news",
            rules.marketing.lists["news"],
            [
                NewSubscriber(
                    p.address, p.name, p.language, tier=p.tier, consent_source="demo signup"
                )
                for p in PEOPLE
            ],
            now,
            None,
        )
    definition = CampaignDefinition.model_validate(
        {
            "name": "winter-news",
            "list": "news",
            "template": "newsletter",
            "variables": {
                "headline": "Winter opening hours",
                "intro": "We are open every day until 20:00 in December.",
                "link": "https://acme.example/news/winter",
            },
        }
    )
    book = app.campaigns.book
    before = sink.count
    book.save(definition, schedule=False)
    started = book.start_now("winter-news")
    app.campaigns.wake()
    wait_for(lambda: _status(db) in ("finished", "finished_with_failures"), 30.0)
    mails = sink.messages[before:]
    lines = [
        f"Campaigns: `winter-news` to the list `news` ({started.recipients} subscribers): "
        f"{len(mails)} messages, {len({r for m in mails for r in m.rcpt_tos})} recipients, "
        f"run {_status(db)}"
    ]
    parsed = {m.rcpt_tos[0]: message_from_bytes(m.data, policy=policy.default) for m in mails}
    anna = parsed.get(PEOPLE[0].address)
    if anna is not None:
        lines.append(f"  Subject to Anna: {anna['Subject']}")
        lines.append(f"  Subject to 王芳: {parsed[PEOPLE[1].address]['Subject']}")
        header = str(anna["List-Unsubscribe"])
        lines.append(f"  List-Unsubscribe: {header[:110]}...")
        link = header.split("<", 1)[1].split(">", 1)[0]
        if not link.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"unexpected unsubscribe link {link!r}")
        # the demo's own web endpoint on loopback; a GET changes nothing
        with urllib.request.urlopen(link, timeout=10) as page:  # noqa: S310
            lines.append(f"  GET {link[:60]}...: {page.status}, a page with the button")
        request = urllib.request.Request(  # noqa: S310  (checked above)
            link, data=b"List-Unsubscribe=One-Click", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            lines.append(f"  one-click POST: {answer.status}, Anna is unsubscribed from `news`")
    bob = parsed.get(PEOPLE[2].address)
    if bob is not None:
        mailto = str(bob["List-Unsubscribe"]).split("<mailto:", 1)[1].split(">", 1)[0]
        subject = mailto.split("?subject=", 1)[1].replace("%20", " ")
        leave = EmailMessage()
        leave["From"] = f"Bob Jones <{PEOPLE[2].address}>"
        leave["To"] = UNSUBSCRIBE
        leave["Subject"] = subject
        leave["Message-ID"] = make_msgid(domain="customer.example")
        leave.set_content("")
        with smtplib.LMTP("127.0.0.1", lmtp_port) as lmtp:
            lmtp.send_message(leave)
        lines.append("  Bob mailed the unsubscribe address through the LMTP intake")
    wait_for(lambda: len(_suppressions(db)) >= 2, 30.0)
    for address, scope, reason in _suppressions(db):
        lines.append(f"  suppressed: {address} ({scope}, {reason})")
    return "\n".join(lines)


def _suppressions(db: Database) -> list[tuple[str, str, str]]:
    with db.reading() as conn:
        rows = conn.execute(
            select(SUPPRESSIONS.c.address, SUPPRESSIONS.c.scope, SUPPRESSIONS.c.reason)
            .where(SUPPRESSIONS.c.reason == "unsubscribe")
            .order_by(SUPPRESSIONS.c.address)
        ).all()
    return [(r.address, r.scope, r.reason) for r in rows]
