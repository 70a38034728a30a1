"""SLA end to end on real servers: Dovecot (IMAP, LMTP), the submission port, an SMTP sink.

Customer mail arrives in Dovecot, the daemon answers it automatically, an agent replies
through the submission port (or files the reply in the Sent folder) and the clock records
the first response in business minutes; an unanswered request is escalated exactly once.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from daemon.app import App, build_app
from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.sink import ReceivedMessage, SmtpSink
from daemon.sla import CLOCKS
from daemon.tables import Message
from tests.helpers import mailbox_for, make_mail, settings_for, wait_until
from tests.servers.dovecot import Dovecot
from tests.servers.imap import Account

ROOT = Path(__file__).resolve().parent.parent
PASSWORD_ENV = "MAILCARE_TEST_SLA_IMAP_PW"
AGENT_ENV = "MAILCARE_TEST_SLA_AGENT_PW"
AGENT_PASSWORD = "agent-secret-1"
# Monday 5 January 2026, 09:00 UTC = 10:00 in Berlin
MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
STEPS = ["parse", "screen", "thread", "contact", "sla", "reply"]

RULES = """
version: 1
identity:
  addresses: [%(support)s]
calendars:
  office:
    timezone: Europe/Berlin
    hours: {mon-fri: ["09:00-12:00", "13:00-17:00"]}
auto_replies:
  rules:
    - {name: acknowledge, template: acknowledge, from: "Support <%(support)s>"}
sla:
  calendar: office
  from: "SLA monitor <sla@acme.example>"
  leads: {default: lead@acme.example}
  sweep_every: 0.1
  resolved_folder: Resolved
  survey: {enabled: true, from: "Support <%(support)s>"}
  policies:
    - {name: standard, first_response: 4h, resolution: 14h, warn: null}
"""


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


class Daemon:
    """A daemon on a frozen business clock, started and restarted against one database."""

    def __init__(self, tmp_path: Path, dovecot: Dovecot, account: Account, sink: SmtpSink) -> None:
        self.clock = FrozenClock(MONDAY)
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES % {"support": account.address}, encoding="utf-8")
        self.settings = settings_for(
            f"sqlite:///{tmp_path / 'sla.sqlite3'}",
            [mailbox_for(dovecot, account, PASSWORD_ENV, address=account.address)],
            paths={"rules": str(rules), "templates": str(ROOT / "templates")},
            relay={"enabled": True, "host": "127.0.0.1", "port": sink.port, "tls": "none"},
            runner={"idle_wait": 0.05, "processes": 1, "steps": STEPS},
            submission={
                "enabled": True,
                "host": "127.0.0.1",
                "port": 0,
                "tls": "none",
                "users": [{"username": "ben", "password": {"env": AGENT_ENV}}],
            },
        )
        self.app: App | None = None
        schema = Database(self.settings.database_url)
        schema.upgrade()
        schema.dispose()

    def start(self) -> App:
        app = build_app(self.settings, clock=self.clock)
        for worker in app.imap.workers:
            worker.routes.sweep_every = 0.0  # the frozen clock's monotonic time stands still
        app.start()
        self.app = app
        return app

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop()
            self.app = None

    def clock_of(self, message_id: str) -> Any:
        assert self.app is not None
        with self.app.db.reading() as conn:
            conversation = conn.execute(
                select(Message.conversation_id).where(Message.message_id == message_id)
            ).scalar()
            if conversation is None:
                return None
            return conn.execute(
                select(CLOCKS).where(CLOCKS.c.conversation_id == conversation)
            ).first()


@pytest.fixture
def daemon(
    tmp_path: Path,
    dovecot: Dovecot,
    sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Daemon, Account]]:
    account = dovecot.account()
    monkeypatch.setenv(PASSWORD_ENV, account.password)
    monkeypatch.setenv(AGENT_ENV, AGENT_PASSWORD)
    runner = Daemon(tmp_path, dovecot, account, sink)
    yield runner, account
    runner.stop()


def to(sink: SmtpSink, address: str) -> list[ReceivedMessage]:
    return [m for m in sink.messages if address in m.rcpt_tos]


def parsed(message: ReceivedMessage) -> email.message.EmailMessage:
    return email.message_from_bytes(message.data, policy=email.policy.default)  # type: ignore[return-value]


def customer_mail(account: Account, number: int) -> bytes:
    return make_mail(
        subject=f"Order {number} arrived broken",
        sender=f"Customer {number} <c{number}@customer.example>",
        to=account.address,
        message_id=f"<q{number}@customer.example>",
    )


def agent_reply(account: Account, number: int, when: datetime) -> bytes:
    raw = make_mail(
        subject=f"Re: Order {number} arrived broken",
        body="We are sending a replacement today.",
        sender=f"Ben <{account.address}>",
        to=f"c{number}@customer.example",
        message_id=f"<a{number}@acme.example>",
        in_reply_to=f"<q{number}@customer.example>",
        references=f"<q{number}@customer.example>",
    )
    return raw.replace(
        format_datetime(datetime(2026, 11, 20, 9, 30, tzinfo=UTC)).encode(),
        format_datetime(when).encode(),
    )


def test_first_responses_through_submission_and_sent_folder_in_business_minutes(
    daemon: tuple[Daemon, Account], dovecot: Dovecot, sink: SmtpSink
) -> None:
    runner, account = daemon
    app = runner.start()
    dovecot.lmtp_deliver(account, customer_mail(account, 1))
    wait_until(lambda: to(sink, "c1@customer.example"), what="the auto-reply")
    [auto_reply] = to(sink, "c1@customer.example")
    assert parsed(auto_reply)["Auto-Submitted"] == "auto-replied"
    row = runner.clock_of("<q1@customer.example>")
    assert row.first_response_at is None  # the auto-reply is no response

    # 10:00 Berlin + 2 h 47 min = 12:47: the lunch break does not count
    runner.clock.advance(timedelta(hours=2, minutes=47))
    assert app.submission is not None
    with smtplib.SMTP("127.0.0.1", app.submission.port, timeout=10) as client:
        client.login("ben", AGENT_PASSWORD)
        client.sendmail(
            account.address, ["c1@customer.example"], agent_reply(account, 1, runner.clock.now())
        )
    wait_until(lambda: len(to(sink, "c1@customer.example")) == 2, what="the relayed reply")
    row = runner.clock_of("<q1@customer.example>")
    assert row.first_response_at == runner.clock.now()
    assert row.first_response_minutes == pytest.approx(120.0)
    assert row.waiting_since is None

    # a second request, answered from a mail client that files its reply in Sent
    dovecot.lmtp_deliver(account, customer_mail(account, 2))
    wait_until(lambda: to(sink, "c2@customer.example"), what="the second auto-reply")
    opened = runner.clock_of("<q2@customer.example>").opened_at
    runner.clock.advance(timedelta(hours=3))  # 15:47 Berlin
    client = dovecot.open_client(account)
    try:
        when = runner.clock.now()
        client.append("Sent", agent_reply(account, 2, when), flags=[b"\\Seen"], msg_time=when)
    finally:
        client.logout()

    def answered() -> Any:
        app.imap.wake()
        row = runner.clock_of("<q2@customer.example>")
        return row if row is not None and row.first_response_at is not None else None

    row = wait_until(answered, what="the Sent folder reply recorded")
    assert row.first_response_at == when
    assert row.first_response_minutes == pytest.approx(
        app.sla.calendars.minutes(  # type: ignore[union-attr]
            app.sla.calendars.get(app.rules, "office"),  # type: ignore[union-attr]
            opened,
            when,
        )
    )
    # opened 12:47 Berlin, during lunch: the clock ran 13:00-15:47
    assert row.first_response_minutes == pytest.approx(167.0)
    assert len(to(sink, "c2@customer.example")) == 1  # filed, not relayed again
    assert to(sink, "lead@acme.example") == []  # both answered in time


def test_an_unanswered_request_is_escalated_exactly_once_across_a_restart(
    daemon: tuple[Daemon, Account], dovecot: Dovecot, sink: SmtpSink
) -> None:
    runner, account = daemon
    app = runner.start()
    dovecot.lmtp_deliver(account, customer_mail(account, 3))
    wait_until(lambda: to(sink, "c3@customer.example"), what="the auto-reply")
    row = runner.clock_of("<q3@customer.example>")
    # four business hours from Monday 10:00 Berlin, an hour's lunch: 15:00 Berlin
    assert row.first_response_due == datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
    runner.clock.advance(timedelta(hours=5, minutes=1))
    [escalation] = wait_until(lambda: to(sink, "lead@acme.example"), what="the escalation")
    mail = parsed(escalation)
    assert "SLA breached: first response" in mail["Subject"]
    assert mail["Auto-Submitted"] == "auto-generated"
    assert escalation.mail_from == "<>"  # the null return path
    assert app.sweeper is not None
    runs = app.sweeper.runs
    wait_until(lambda: app.sweeper is not None and app.sweeper.runs >= runs + 5, what="sweeps")
    runner.stop()
    app = runner.start()
    assert app.sweeper is not None
    wait_until(lambda: app.sweeper is not None and app.sweeper.runs >= 5, what="sweeps")
    assert len(to(sink, "lead@acme.example")) == 1


def test_agents_resolve_by_keyword_or_by_moving_and_filed_notices_are_no_response(
    daemon: tuple[Daemon, Account], dovecot: Dovecot, sink: SmtpSink
) -> None:
    runner, account = daemon
    app = runner.start()
    for number in (4, 5):
        dovecot.lmtp_deliver(account, customer_mail(account, number))
        wait_until(lambda n=number: to(sink, f"c{n}@customer.example"), what="an auto-reply")
    runner.clock.advance(timedelta(minutes=30))
    client = dovecot.open_client(account)
    try:
        # an agent's away notice filed in Sent is no response
        notice = (
            agent_reply(account, 4, runner.clock.now())
            .replace(b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:", 1)
            .replace(b"<a4@acme.example>", b"<away4@acme.example>")
        )
        client.append("Sent", notice, msg_time=runner.clock.now())
        client.select_folder("INBOX")
        [four_uid] = client.search(["HEADER", "Message-ID", "q4@customer.example"])
        [five_uid] = client.search(["HEADER", "Message-ID", "q5@customer.example"])
        client.add_flags([four_uid], [b"$Resolved"])
        if not client.folder_exists("Resolved"):
            client.create_folder("Resolved")
        client.move([five_uid], "Resolved")
    finally:
        client.logout()

    def resolved(message_id: str) -> Any:
        app.imap.wake()
        row = runner.clock_of(message_id)
        return row if row is not None and row.status == "resolved" else None

    four = wait_until(lambda: resolved("<q4@customer.example>"), what="resolved by keyword")
    five = wait_until(lambda: resolved("<q5@customer.example>"), what="resolved by moving")
    assert four.first_response_at is None  # the away notice did not count
    assert four.resolved_at == five.resolved_at == runner.clock.now()
    assert four.resolution_minutes == pytest.approx(30.0)
    # each customer gets one satisfaction survey
    for number in (4, 5):
        surveys = wait_until(
            lambda n=number: [
                m
                for m in to(sink, f"c{n}@customer.example")
                if "How did we do" in str(parsed(m)["Subject"])
            ],
            what="the survey",
        )
        assert len(surveys) == 1
