"""Soft bounces counted to a limit, signs of life, complaint scopes: through the real pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from daemon.app import App
from daemon.automated import FailedRecipient
from daemon.clock import FrozenClock
from daemon.inbox import Inbox
from daemon.screening import SOFT_BOUNCES, counts_as_soft
from daemon.suppressions import SUPPRESSIONS
from daemon.tables import Campaign, CampaignRun, CampaignSend
from tests.helpers import make_mail, pipeline_app

DATA = Path(__file__).resolve().parent / "data" / "automated"
SUPPORT = "support@acme.example"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

RULES = """
version: 1
identity:
  company: {name: Acme Support, signature: "Acme Ltd"}
auto_replies:
  rules:
    - name: acknowledge
      template: acknowledge
      from: "Acme Support <support@acme.example>"
marketing:
  bounces: {soft_limit: 3, soft_window: 10d}
"""


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[App]:
    application = pipeline_app(db_url, tmp_path, RULES, FrozenClock(START))
    yield application
    application.db.dispose()


def deliver(app: App, *raws: bytes, envelope_from: str | None = None) -> None:
    inbox = Inbox(app.db, app.clock)
    for raw in raws:
        inbox.store_delivered(
            raw,
            channel="lmtp",
            envelope_from=envelope_from,
            recipients=[SUPPORT],
            mailboxes=["support"],
        )
    while app.runner.run_once():
        pass


def dsn(
    recipient: str,
    status: str,
    diagnostic: str,
    *,
    action: str = "failed",
    number: int = 1,
    original: str = "<spring-1@acme.example>",
) -> bytes:
    """An RFC 3464 delivery status notification with the returned headers."""
    text = f"""\
Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
To: {SUPPORT}
Subject: Undelivered Mail Returned to Sender
Date: Mon, 02 Mar 2026 10:00:00 +0000
Message-ID: <dsn-{number}-{recipient}@mx.example.org>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="R"

--R
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.org.

--R
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--R
Content-Type: text/rfc822-headers

From: Acme News <news@acme.example>
To: {recipient}
Subject: Spring sale
Message-ID: {original}

--R--
"""
    return text.replace("\n", "\r\n").encode()


def full(address: str, number: int, original: str | None = None) -> bytes:
    """A mailbox-full bounce (4.2.2 over quota) for the campaign message number."""
    return dsn(
        address,
        "4.2.2",
        "452 4.2.2 Mailbox full, over quota",
        number=number,
        original=original or f"<spring-{number}@acme.example>",
    )


def soft_rows(app: App) -> dict[str, int]:
    with app.db.reading() as conn:
        return dict(conn.execute(select(SOFT_BOUNCES.c.address, SOFT_BOUNCES.c.count)).all())


def suppressions(app: App) -> dict[tuple[str, str], str]:
    with app.db.reading() as conn:
        rows = conn.execute(
            select(SUPPRESSIONS.c.address, SUPPRESSIONS.c.scope, SUPPRESSIONS.c.reason)
        ).all()
    return {(r.address, r.scope): r.reason for r in rows}


def test_soft_bounces_are_counted_to_the_limit_then_suppressed(app: App) -> None:
    deliver(app, full("hana@example.jp", 1))
    app.clock.advance(timedelta(days=2))  # type: ignore[attr-defined]
    deliver(app, full("hana@example.jp", 2))
    assert soft_rows(app) == {"hana@example.jp": 2}
    assert suppressions(app) == {}
    app.clock.advance(timedelta(days=2))  # type: ignore[attr-defined]
    deliver(app, full("hana@example.jp", 3))
    assert suppressions(app) == {("hana@example.jp", "all"): "soft-bounce"}
    assert soft_rows(app) == {}  # a removed suppression starts from nothing
    with app.db.reading() as conn:
        detail = conn.execute(select(SUPPRESSIONS.c.detail)).scalar_one()
    assert detail.startswith("3 soft bounces since 2026-03-02: 4.2.2 mailboxfull")


def test_a_qmail_mailbox_full_bounce_counts(app: App) -> None:
    deliver(app, (DATA / "qmail-mailbox-full.eml").read_bytes())
    assert soft_rows(app) == {"hana@example.jp": 1}


def test_an_old_window_starts_the_count_again(app: App) -> None:
    deliver(app, full("kai@example.org", 1), full("kai@example.org", 2))
    assert soft_rows(app) == {"kai@example.org": 2}
    app.clock.advance(timedelta(days=11))  # type: ignore[attr-defined]
    deliver(app, full("kai@example.org", 3))
    assert soft_rows(app) == {"kai@example.org": 1}
    app.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
    deliver(app, full("kai@example.org", 4))
    assert suppressions(app) == {}


def test_a_second_report_of_the_same_send_is_not_counted_twice(app: App) -> None:
    same = "<spring-7@acme.example>"
    deliver(app, full("lu@example.org", 1, same), full("lu@example.org", 2, same))
    deliver(app, full("lu@example.org", 3, same))
    assert soft_rows(app) == {"lu@example.org": 1}


def test_mail_from_the_address_resets_the_count(app: App) -> None:
    deliver(app, full("anna.berg@customer.example", 1), full("anna.berg@customer.example", 2))
    app.clock.advance(60)  # type: ignore[attr-defined]
    deliver(app, make_mail(to=SUPPORT))  # From: anna.berg@customer.example
    assert soft_rows(app) == {}
    deliver(app, full("anna.berg@customer.example", 3))
    assert soft_rows(app) == {"anna.berg@customer.example": 1}
    assert suppressions(app) == {}


def test_a_delivered_dsn_resets_the_count(app: App) -> None:
    deliver(app, full("dora@customer.example", 1), full("dora@customer.example", 2))
    app.clock.advance(60)  # type: ignore[attr-defined]
    deliver(app, (DATA / "dsn-delivered.eml").read_bytes())
    assert soft_rows(app) == {}


def test_a_relayed_dsn_resets_the_count(app: App) -> None:
    deliver(app, full("ole@example.org", 1))
    app.clock.advance(60)  # type: ignore[attr-defined]
    deliver(app, dsn("ole@example.org", "2.0.0", "250 ok", action="relayed", number=9))
    assert soft_rows(app) == {}


@pytest.mark.parametrize(
    ("status", "diagnostic", "action"),
    [
        ("5.7.1", "554 5.7.1 Service unavailable; client host blocked using zen", "failed"),
        ("5.7.26", "550 5.7.26 Unauthenticated email is not accepted (DMARC)", "failed"),
        ("5.0.0", "550 Message rejected as spam", "failed"),
        ("4.4.1", "421 4.4.1 connection timed out, will retry", "delayed"),
    ],
)
def test_sender_side_refusals_and_delays_are_not_counted(
    app: App, status: str, diagnostic: str, action: str
) -> None:
    for number in range(4):
        deliver(app, dsn("eva@example.org", status, diagnostic, action=action, number=number))
    assert soft_rows(app) == {}
    assert suppressions(app) == {}


def test_the_delay_and_policy_samples_are_not_counted(app: App) -> None:
    deliver(
        app,
        (DATA / "dsn-delayed.eml").read_bytes(),
        (DATA / "dsn-policy-571.eml").read_bytes(),
        (DATA / "exim-delay-warning.eml").read_bytes(),
    )
    assert soft_rows(app) == {}


def test_a_hard_bounce_is_suppressed_at_once_in_scope_all(app: App) -> None:
    deliver(app, (DATA / "dsn-userunknown.eml").read_bytes())
    assert list(suppressions(app).values()) == ["hard-bounce"]
    assert {scope for _, scope in suppressions(app)} == {"all"}
    assert soft_rows(app) == {}


def test_which_recipients_count_as_soft() -> None:
    def rcpt(status: str, reason: str, action: str = "failed", hard: bool = False) -> bool:
        return counts_as_soft(FailedRecipient("a@b.example", status, action, None, reason, hard))

    assert rcpt("4.2.2", "mailboxfull")
    assert rcpt("5.2.2", "mailboxfull")
    assert rcpt("4.4.7", "expired")
    assert rcpt("5.0.0", "undefined")
    assert not rcpt("5.1.1", "userunknown", hard=True)
    assert not rcpt("5.7.1", "mailboxfull")  # 5.7.x refuses us, whatever the text says
    assert not rcpt("4.7.0", "networkerror")
    assert not rcpt("5.0.0", "spam")
    assert not rcpt("5.3.4", "toobig")
    assert not rcpt("4.2.2", "mailboxfull", action="delayed")


# --- complaints ---------------------------------------------------------------------------


def arf(complainant: str, original: str, list_headers: bool) -> bytes:
    """An ARF abuse report returning the complained-about message's headers."""
    extra = (
        "List-Unsubscribe: <https://acme.example/unsubscribe/x>\nList-Id: <news.acme.example>\n"
        if list_headers
        else ""
    )
    text = f"""\
From: <abuse@isp.example>
To: <fbl@acme.example>
Subject: FW: Spring sale
Date: Wed, 04 Mar 2026 08:00:00 +0000
Message-ID: <arf-{complainant}@isp.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="A"

--A
Content-Type: text/plain; charset=us-ascii

This is an email abuse report.

--A
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <{complainant}>

--A
Content-Type: text/rfc822-headers

From: Acme <news@acme.example>
To: {complainant}
Subject: Spring sale
Message-ID: {original}
{extra}
--A--
"""
    return text.replace("\n", "\r\n").encode()


def test_a_complaint_about_list_mail_stops_marketing_only(app: App) -> None:
    deliver(app, arf("jo@isp.example", "<news-1@acme.example>", list_headers=True))
    assert suppressions(app) == {("jo@isp.example", "marketing"): "complaint"}


def test_a_complaint_about_a_campaign_send_stops_marketing_only(app: App) -> None:
    now = START
    with app.db.transaction() as conn:
        campaign = conn.execute(
            insert(Campaign.__table__)
            .values(
                name="spring",
                kind="newsletter",
                definition="{}",
                state="done",
                created_at=now,
                updated_at=now,
            )
            .returning(Campaign.__table__.c.id)  # type: ignore[attr-defined]
        ).scalar_one()
        run = conn.execute(
            insert(CampaignRun.__table__)
            .values(
                campaign_id=campaign,
                occurrence="2026-03-01",
                status="finished",
                scheduled_for=now,
                started_at=now,
                recipients=1,
                excluded=0,
            )
            .returning(CampaignRun.__table__.c.id)  # type: ignore[attr-defined]
        ).scalar_one()
        conn.execute(
            insert(CampaignSend.__table__).values(
                run_id=run,
                address="mo@isp.example",
                state="sent",
                due_at=now,
                message_id="<spring-run1-mo@acme.example>",
                attempts=1,
            )
        )
    deliver(app, arf("mo@isp.example", "<spring-run1-mo@acme.example>", list_headers=False))
    assert suppressions(app) == {("mo@isp.example", "marketing"): "complaint"}


def test_any_other_complaint_stops_everything(app: App) -> None:
    deliver(app, (DATA / "arf-abuse.eml").read_bytes())
    assert suppressions(app) == {("jo@isp.example", "all"): "complaint"}
