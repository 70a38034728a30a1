"""Auto-replies through the real pipeline: once per request, never to a machine, rate-limited."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from daemon.app import App, build_app
from daemon.clock import FrozenClock
from daemon.inbox import Inbox
from daemon.outbox import OUTBOX
from daemon.tables import FaqOffer, Message, Suppression
from tests.helpers import make_mail, settings_for

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = "support@acme.example"

RULES = """
version: 1
identity:
  company: {name: Acme Support, signature: "Acme Ltd"}
calendars:
  office:
    timezone: Europe/Berlin
    hours: {mon-fri: ["09:00-17:00"]}
auto_replies:
  limits: {per_rule_window: 24h, max_per_hour: 3, max_per_day: 10}
  rules:
    - name: acknowledge
      template: acknowledge
      from: "Acme Support <support@acme.example>"
      calendar: office
      answer_within: {default: 120}
"""


def write_rules(path: Path, text: str = RULES) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def make_app(
    db_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    paths_templates: Path = ROOT / "templates",
    **values: Any,
) -> App:
    rules = write_rules(tmp_path / "rules.yaml")
    settings = settings_for(
        db_url,
        paths={"rules": str(rules), "templates": str(paths_templates)},
        relay={"enabled": True, "host": "127.0.0.1", "port": 2525, "tls": "none"},
        **values,
    )
    return build_app(settings, clock=clock, intake=False, sender=False)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[App]:
    application = make_app(db_url, tmp_path, clock)
    yield application
    application.db.dispose()


def deliver(app: App, *raws: bytes) -> None:
    inbox = Inbox(app.db, app.clock)
    for raw in raws:
        inbox.store_delivered(
            raw, channel="lmtp", envelope_from=None, recipients=[SUPPORT], mailboxes=["support"]
        )
    while app.runner.run_once():
        pass


def outgoing(app: App) -> list[email.message.EmailMessage]:
    with app.db.reading() as conn:
        raws = conn.execute(select(OUTBOX.c.raw).order_by(OUTBOX.c.id)).scalars().all()
    return [
        email.message_from_bytes(bytes(raw), policy=email.policy.default)  # type: ignore[misc]
        for raw in raws
    ]


def decisions(app: App) -> dict[str, str]:
    with app.db.reading() as conn:
        rows = conn.execute(select(Message.message_id, Message.reply_decision)).all()
    return {r.message_id: r.reply_decision for r in rows}


def test_a_new_request_gets_one_reply_with_loop_safe_headers(app: App) -> None:
    deliver(app, make_mail(to=SUPPORT, message_id="<q1@customer.example>"))
    [reply] = outgoing(app)
    assert reply["To"].addresses[0].addr_spec == "anna.berg@customer.example"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["X-Auto-Response-Suppress"] == "All"
    assert reply["In-Reply-To"] == "<q1@customer.example>"
    assert "<q1@customer.example>" in reply["References"]
    assert reply["X-Mailcare-Loop"] and len(reply["X-Mailcare-Loop"]) >= 16
    with app.db.reading() as conn:
        conversation = conn.execute(select(Message.conversation_id)).scalar_one()
    assert f"[MC#{conversation}]" in reply["Subject"]
    assert reply["Message-ID"].endswith("@acme.example>")
    assert reply.get_body(("plain",)) is not None
    assert decisions(app)["<q1@customer.example>"] == "auto-reply by rule acknowledge"


def test_reprocessing_a_message_never_queues_a_second_reply(app: App) -> None:
    deliver(app, make_mail(to=SUPPORT))
    with app.db.transaction() as conn:
        conn.execute(Message.__table__.update().values(state="new"))  # type: ignore[attr-defined]
    while app.runner.run_once():
        pass
    assert len(outgoing(app)) == 1


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"Auto-Submitted": "auto-replied"}, "automated mail (auto-reply)"),
        ({"Auto-Submitted": "auto-generated; owner-email=x@y.example"}, "automated mail"),
        ({"X-Auto-Response-Suppress": "oof, DR"}, "automated mail"),
        ({"Precedence": "bulk"}, "automated mail"),
        ({"List-Id": "<users.lists.example.org>"}, "automated mail (list)"),
    ],
)
def test_machines_get_no_reply(app: App, extra: dict[str, str], why: str) -> None:
    deliver(app, make_mail(to=SUPPORT, extra=extra))
    assert outgoing(app) == []
    assert decisions(app)["<m1@customer.example>"].startswith(why)


def test_auto_submitted_no_is_a_person(app: App) -> None:
    deliver(app, make_mail(to=SUPPORT, extra={"Auto-Submitted": "no"}))
    assert len(outgoing(app)) == 1


def test_no_reply_when_we_were_only_bccd_or_to_ourselves(app: App) -> None:
    deliver(
        app,
        make_mail(to="someone@else.example", message_id="<bcc@customer.example>"),
        make_mail(sender=f"Support <{SUPPORT}>", to=SUPPORT, message_id="<self@acme.example>"),
    )
    assert outgoing(app) == []
    found = decisions(app)
    assert "only Bcc'd" in found["<bcc@customer.example>"]
    assert found["<self@acme.example>"].startswith("automated mail (own-address)")


def test_follow_ups_in_a_thread_are_not_acknowledged_again(app: App, clock: FrozenClock) -> None:
    deliver(app, make_mail(to=SUPPORT, message_id="<a@customer.example>"))
    clock.advance(timedelta(days=3))
    deliver(
        app,
        make_mail(
            to=SUPPORT,
            subject="Re: Printer on floor 3 is jammed",
            message_id="<b@customer.example>",
            in_reply_to="<a@customer.example>",
        ),
    )
    assert len(outgoing(app)) == 1
    assert decisions(app)["<b@customer.example>"].startswith("a follow-up in an open conversation")


def test_one_reply_per_sender_per_rule_per_day_and_an_hourly_ceiling(
    app: App, clock: FrozenClock
) -> None:
    for n in range(3):
        deliver(app, make_mail(to=SUPPORT, subject=f"Question {n}", message_id=f"<r{n}@c.example>"))
    assert len(outgoing(app)) == 1
    assert "rate limit: already answered by rule acknowledge" in decisions(app)["<r1@c.example>"]
    clock.advance(timedelta(hours=24, minutes=1))
    deliver(app, make_mail(to=SUPPORT, subject="Next day", message_id="<r9@c.example>"))
    assert len(outgoing(app)) == 2


def test_hourly_ceiling_across_rules(db_url: str, tmp_path: Path, clock: FrozenClock) -> None:
    rules = RULES.replace(
        "per_rule_window: 24h, max_per_hour: 3", "per_rule_window: 0, max_per_hour: 2"
    )
    application = make_app(db_url, tmp_path, clock)
    write_rules(tmp_path / "rules.yaml", rules)
    application.runner.run_once()  # picks up the edited rules
    try:
        for n in range(4):
            deliver(
                application,
                make_mail(to=SUPPORT, subject=f"Question {n}", message_id=f"<h{n}@c.example>"),
            )
        assert len(outgoing(application)) == 2
        assert "2 auto-replies per 1 h" in decisions(application)["<h2@c.example>"]
        clock.advance(timedelta(minutes=61))
        deliver(application, make_mail(to=SUPPORT, subject="Later", message_id="<h9@c.example>"))
        assert len(outgoing(application)) == 3
    finally:
        application.db.dispose()


def test_a_hard_bounce_suppresses_the_address_for_later_replies(app: App) -> None:
    bounce = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>\r\n"
        b"To: support@acme.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <bounce1@mx.acme.example>\r\nAuto-Submitted: auto-replied\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.acme.example\r\n\r\n"
        b"Final-Recipient: rfc822; gone@customer.example\r\nAction: failed\r\n"
        b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <gone@customer.example>: "
        b"Recipient address rejected: User unknown\r\n"
        b"--B--\r\n"
    )
    deliver(app, bounce)
    assert outgoing(app) == []
    with app.db.reading() as conn:
        suppressed = conn.execute(select(Suppression.address, Suppression.reason)).all()
    assert [tuple(r) for r in suppressed] == [("gone@customer.example", "hard-bounce")]
    deliver(app, make_mail(sender="gone@customer.example", to=SUPPORT, message_id="<g@c.example>"))
    assert outgoing(app) == []
    assert "suppressed (hard-bounce)" in decisions(app)["<g@c.example>"]


def test_names_and_subjects_cannot_inject_headers(app: App) -> None:
    raw = (
        b"From: =?utf-8?q?Eve=0D=0ABcc=3A_x=40evil=2Eexample?= <eve@customer.example>\r\n"
        b"To: support@acme.example\r\n"
        b"Subject: Help =?utf-8?q?me=0D=0ABcc=3A_victim=40evil=2Eexample?=\r\n"
        b"Message-ID: <inject@customer.example>\r\n\r\nPlease help.\r\n"
    )
    deliver(app, raw)
    [reply] = outgoing(app)
    assert reply["Bcc"] is None
    assert [addr.addr_spec for addr in reply["To"].addresses] == ["eve@customer.example"]
    assert "\n" not in str(reply["Subject"])


def test_faq_answers_are_offered_and_counted(app: App) -> None:
    deliver(
        app,
        make_mail(
            to=SUPPORT,
            subject="Cannot log in, forgot my password",
            body="Hello, I forgot my password and cannot log in. How do I reset my password?",
        ),
    )
    [reply] = outgoing(app)
    with app.db.reading() as conn:
        offers = conn.execute(select(FaqOffer.entry)).scalars().all()
    assert offers, "a password question offers the password FAQ entry"
    text = reply.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "password" in text.lower()


def test_broken_rules_keep_the_last_good_ones(app: App, tmp_path: Path) -> None:
    write_rules(tmp_path / "rules.yaml", "version: 1\nauto_replies: {rules: [{name: x}]}\n")
    deliver(app, make_mail(to=SUPPORT))
    assert len(outgoing(app)) == 1, "the last good rules still answer"
    write_rules(tmp_path / "rules.yaml", "version: 1\nauto_replies: {enabled: false}\n")
    deliver(app, make_mail(to=SUPPORT, subject="Another", message_id="<other@c.example>"))
    assert len(outgoing(app)) == 1
    assert decisions(app)["<other@c.example>"] == "auto-replies are disabled in rules.yaml"


def test_chinese_mail_gets_the_chinese_template(app: App) -> None:
    deliver(
        app,
        make_mail(
            to=SUPPORT,
            subject="订单还没有发货",
            body="你好，我上周下的订单到现在还没有发货，请帮忙查一下物流。谢谢！",
        ),
    )
    [reply] = outgoing(app)
    text = reply.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_count_of_outgoing_rows_matches_decisions(app: App) -> None:
    deliver(
        app,
        *(
            make_mail(to=SUPPORT, sender=f"c{n}@x.example", message_id=f"<n{n}@x>")
            for n in range(20)
        ),
    )
    with app.db.reading() as conn:
        rows = conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one()
    assert rows == 20
    assert all(d == "auto-reply by rule acknowledge" for d in decisions(app).values())


def templates_copy(tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", target)
    return target


def test_a_broken_template_sends_nothing_and_says_why(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    templates = templates_copy(tmp_path)
    application = make_app(db_url, tmp_path, clock, paths_templates=templates)
    try:
        for variant in (templates / "replies" / "acknowledge").glob("*.txt"):
            variant.write_text("Subject: {{ nosuch.field }}\n\nHello\n", encoding="utf-8")
        deliver(application, make_mail(to=SUPPORT, message_id="<t1@c.example>"))
        assert outgoing(application) == []
        reason = decisions(application)["<t1@c.example>"]
        assert reason.startswith("not sent: template error") and "nosuch" in reason
        with application.db.reading() as conn:
            assert conn.execute(select(Message.state)).scalar_one() == "done"
        # the admin fixes the template: the next request is answered without a restart
        (templates / "replies" / "acknowledge" / "default.txt").write_text(
            "Subject: {{ ticket }} Thanks\n\nWe got your message.\n", encoding="utf-8"
        )
        for variant in (templates / "replies" / "acknowledge").glob("*.txt"):
            if variant.name != "default.txt":
                variant.unlink()
        for variant in (templates / "replies" / "acknowledge").glob("*.html"):
            variant.unlink()
        deliver(
            application, make_mail(to=SUPPORT, message_id="<t2@c.example>", sender="b@c.example")
        )
        [reply] = outgoing(application)
        assert reply["Subject"].endswith("] Thanks")
    finally:
        application.db.dispose()


def test_status_reports_the_outbox(app: App) -> None:
    from daemon.status import collect, render

    deliver(app, make_mail(to=SUPPORT))
    status = collect(app.db, app.clock)
    assert status.outbox["queued"] == 1
    assert "outbox: 1 queued" in render(status)
