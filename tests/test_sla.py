"""SLA clocks through the real pipeline: events, due times, one notification per event, surveys."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from daemon.agent_replies import AgentReplies
from daemon.app import App, build_app, build_identity
from daemon.clock import FrozenClock
from daemon.errors import ConfigError
from daemon.inbox import Inbox
from daemon.outbox import OUTBOX
from daemon.rules import load_rules
from daemon.sla import CLOCKS, NewEvent
from daemon.sla_sweep import Sweeper
from daemon.tables import Message, SurveyAnswer
from tests.helpers import make_mail, settings_for

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = "support@acme.example"
# Monday 5 January 2026, 09:00 UTC = 10:00 in Berlin
MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

RULES = """
version: 1
identity:
  company: {name: Acme Support, signature: "Acme Ltd"}
calendars:
  office:
    timezone: Europe/Berlin
    hours: {mon-fri: ["09:00-12:00", "13:00-17:00"]}
auto_replies:
  rules:
    - name: acknowledge
      template: acknowledge
      from: "Acme Support <support@acme.example>"
sla:
  calendar: office
  from: "Acme SLA <sla@acme.example>"
  leads: {default: lead@acme.example}
  survey: {enabled: true, from: "Acme Support <support@acme.example>"}
  policies:
    - name: standard
      first_response: %(first)s
      next_response: 4h
      resolution: 14h
      warn: {at_percent: 50}
"""


@dataclass(frozen=True)
class Submitted:
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    username: str = "agent"
    peer: str = "127.0.0.1:1"


def make_app(db_url: str, tmp_path: Path, clock: FrozenClock, first: str = "120") -> App:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES % {"first": first}, encoding="utf-8")
    settings = settings_for(
        db_url,
        paths={"rules": str(rules), "templates": str(ROOT / "templates")},
        relay={"enabled": True, "host": "127.0.0.1", "port": 2525, "tls": "none"},
        runner={"idle_wait": 0.05, "processes": 1, "steps": STEPS},
    )
    return build_app(settings, clock=clock, intake=False, sender=False)


STEPS = ["parse", "screen", "thread", "contact", "sla", "reply"]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(MONDAY)


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[App]:
    application = make_app(db_url, tmp_path, clock)
    yield application
    application.db.dispose()


def deliver(app: App, raw: bytes) -> None:
    Inbox(app.db, app.clock).store_delivered(
        raw, channel="lmtp", envelope_from=None, recipients=[SUPPORT], mailboxes=["support"]
    )
    while app.runner.run_once():
        pass


def clock_row(app: App) -> Any:
    with app.db.reading() as conn:
        return conn.execute(select(CLOCKS)).one()


def mails(app: App, kind: str | None = None) -> list[email.message.EmailMessage]:
    query = select(OUTBOX.c.raw).order_by(OUTBOX.c.id)
    if kind is not None:
        query = query.where(OUTBOX.c.kind == kind)
    with app.db.reading() as conn:
        raws = conn.execute(query).scalars().all()
    return [
        email.message_from_bytes(bytes(raw), policy=email.policy.default)  # type: ignore[misc]
        for raw in raws
    ]


def agent_reply(
    app: App, subject: str = "Re: Printer", in_reply_to: str = "<m1@customer.example>"
) -> None:
    identity = build_identity(app.settings, app.rules, app.db)
    assert app.sla is not None
    replies = AgentReplies(app.db, app.clock, app.outbox, app.sla, identity)
    raw = make_mail(
        subject=subject,
        sender="Ben Agent <ben@acme.example>",
        to="anna.berg@customer.example",
        message_id=f"<r{app.clock.now().timestamp():.0f}@acme.example>",
        in_reply_to=in_reply_to,
        references=in_reply_to,
    )
    replies.accept(Submitted("ben@acme.example", ("anna.berg@customer.example",), raw))


def sweep(app: App) -> int:
    assert app.sweeper is not None
    return app.sweeper.run()


def test_a_new_request_opens_a_clock_due_in_business_minutes(app: App) -> None:
    deliver(app, make_mail())
    row = clock_row(app)
    assert row.policy == "standard" and row.status == "open"
    assert row.opened_at == MONDAY
    # 120 business minutes from 10:00 Berlin: due at noon, before the lunch break
    assert row.first_response_due == datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    # 14 business hours, two days of 7: Wednesday 10:00 Berlin
    assert row.resolution_due == datetime(2026, 1, 7, 9, 0, tzinfo=UTC)
    assert row.waiting_since == MONDAY
    assert len(mails(app, "auto-reply")) == 1  # the auto-reply is not a response
    assert clock_row(app).first_response_at is None


def test_an_agent_reply_through_submission_is_the_first_response(
    app: App, clock: FrozenClock
) -> None:
    deliver(app, make_mail())
    clock.advance(timedelta(hours=3))  # 13:00 Berlin: one business hour was lunch
    agent_reply(app)
    row = clock_row(app)
    assert row.first_response_at == MONDAY + timedelta(hours=3)
    assert row.first_response_minutes == pytest.approx(120.0)
    assert row.waiting_since is None
    [relayed] = mails(app, "agent")
    assert relayed["From"].addresses[0].addr_spec == "ben@acme.example"
    # the customer's answer to the agent joins the same conversation and starts a round
    clock.advance(timedelta(minutes=30))
    deliver(
        app,
        make_mail(
            subject="Re: Printer",
            message_id="<m2@customer.example>",
            in_reply_to=relayed["Message-ID"],
        ),
    )
    row = clock_row(app)
    assert row.waiting_since == MONDAY + timedelta(hours=3, minutes=30)
    assert row.next_response_rounds == 1
    # 4 business hours from 13:30 Berlin: 3.5 on Monday, the rest on Tuesday from 09:00
    assert row.next_response_due == datetime(2026, 1, 6, 8, 30, tzinfo=UTC)


def test_warning_then_breach_each_mailed_once_also_after_a_restart(
    app: App, clock: FrozenClock, db_url: str, tmp_path: Path
) -> None:
    deliver(app, make_mail())
    assert sweep(app) == 0
    clock.advance(timedelta(minutes=61))  # past 50% of the first response
    assert sweep(app) == 1
    assert sweep(app) == 0
    [warning] = mails(app, "sla-warning")
    assert warning["To"] == "lead@acme.example"
    assert warning["Auto-Submitted"] == "auto-generated"
    assert "SLA warning: first response" in warning["Subject"]
    # a restarted daemon (a new sweeper on the same database) does not announce it again
    again = make_app(db_url, tmp_path, clock)
    assert again.sweeper is not None and again.sweeper.run() == 0
    clock.advance(timedelta(hours=3))  # past the first-response due time
    assert again.sweeper.run() == 1
    assert sweep(app) == 0
    [breach] = mails(app, "sla-breach")
    assert "SLA breached: first response" in breach["Subject"]
    again.db.dispose()


def test_a_breach_found_late_is_announced_without_its_warning(app: App, clock: FrozenClock) -> None:
    deliver(app, make_mail())
    clock.advance(timedelta(hours=20))  # Tuesday 06:00 Berlin: the resolution is not at 50%
    assert sweep(app) == 1
    assert len(mails(app, "sla-breach")) == 1 and mails(app, "sla-warning") == []
    row = clock_row(app)
    assert set(json.loads(row.notified)) == {
        "first_response:0:warning",
        "first_response:0:breach",
    }


def test_an_answered_request_is_never_announced(app: App, clock: FrozenClock) -> None:
    deliver(app, make_mail())
    clock.advance(timedelta(minutes=20))
    agent_reply(app)
    clock.advance(timedelta(hours=5))
    sweep(app)
    assert mails(app, "sla-warning") == [] and mails(app, "sla-breach") == []


def test_resolution_sends_one_survey_and_its_answer_is_recorded_without_reopening(
    app: App, clock: FrozenClock
) -> None:
    deliver(app, make_mail())
    clock.advance(timedelta(minutes=20))
    agent_reply(app)
    conversation = clock_row(app).conversation_id
    assert app.sla is not None
    with app.db.transaction() as conn:
        app.sla.record(conn, [NewEvent("t:1", conversation, "resolved", clock.now(), "command")])
        app.sla.record(conn, [NewEvent("t:1", conversation, "resolved", clock.now(), "command")])
    row = clock_row(app)
    assert row.status == "resolved" and row.resolution_minutes == pytest.approx(20.0)
    [survey] = mails(app, "survey")
    text = survey.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    tokens = [line.rsplit(" ", 1)[1] for line in text.splitlines() if ": mcs-" in line]
    assert len(tokens) == 5
    # the customer answers "4" by replying with the token
    clock.advance(timedelta(hours=1))
    deliver(
        app,
        make_mail(
            subject=f"Re: {survey['Subject']}",
            body=f"4 (good): {tokens[3]}",
            message_id="<answer@customer.example>",
            in_reply_to=survey["Message-ID"],
        ),
    )
    with app.db.reading() as conn:
        answer = conn.execute(select(SurveyAnswer.__table__)).one()
        decision = conn.execute(
            select(Message.reply_decision).where(Message.message_id == "<answer@customer.example>")
        ).scalar_one()
    assert (answer.conversation_id, answer.rating, answer.channel) == (conversation, 4, "mail")
    assert decision == "a satisfaction survey answer"
    assert clock_row(app).status == "resolved"
    # a forged token is an ordinary message: it reopens the conversation
    forged = tokens[4][:-1] + ("a" if tokens[4][-1] != "a" else "b")
    deliver(
        app,
        make_mail(
            subject="Re: thanks",
            body=forged,
            message_id="<forged@customer.example>",
            in_reply_to="<m1@customer.example>",
        ),
    )
    with app.db.reading() as conn:
        assert conn.execute(select(SurveyAnswer.rating)).scalar_one() == 4
    row = clock_row(app)
    assert row.status == "open" and row.resolved_at is None
    assert len(mails(app, "survey")) == 1


def test_a_paused_clock_neither_counts_nor_warns(app: App, clock: FrozenClock) -> None:
    deliver(app, make_mail())
    conversation = clock_row(app).conversation_id
    assert app.sla is not None
    clock.advance(timedelta(minutes=30))
    with app.db.transaction() as conn:
        app.sla.record(conn, [NewEvent("p", conversation, "paused", clock.now(), "command")])
    row = clock_row(app)
    assert row.status == "paused" and row.first_response_due is None and row.next_check_at is None
    clock.advance(timedelta(days=3))
    assert sweep(app) == 0
    with app.db.transaction() as conn:
        app.sla.record(conn, [NewEvent("r", conversation, "resumed", clock.now(), "command")])
    row = clock_row(app)
    # 90 business minutes were left: Thursday 10:00 Berlin + 90 min = 11:30 Berlin
    assert row.first_response_due == clock.now() + timedelta(minutes=90)


def test_a_policy_change_recomputes_open_clocks(
    app: App, clock: FrozenClock, tmp_path: Path
) -> None:
    deliver(app, make_mail())
    assert clock_row(app).first_response_due == datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    sweep(app)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES % {"first": "30"}, encoding="utf-8")
    import os

    os.utime(rules, ns=(1, 1))  # a different stamp even within the same clock tick
    sweep(app)
    assert clock_row(app).first_response_due == MONDAY + timedelta(minutes=30)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("{name: p, first_response: 8h, resolution: 2h}", "resolution (120 min) is shorter"),
        ("{name: p, first_response: 2h, calendar: nowhere}", "unknown calendar 'nowhere'"),
        ("{name: p}", "no target"),
        ("{name: p, first_response: 1h, warn: {before: 2h}}", "warn.before"),
    ],
)
def test_invalid_policies_are_rejected(tmp_path: Path, policy: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\ncalendars:\n  office: {timezone: UTC, always_open: true}\n"
        f"sla:\n  calendar: office\n  policies:\n    - {policy}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_rules(path)


def test_business_minutes_need_a_calendar(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nsla:\n  policies:\n    - {name: p, first_response: 60}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="business minutes need a calendar"):
        load_rules(path)
    path.write_text(
        "version: 1\nsla:\n  policies:\n    - {name: p, first_response: 60, business: false}\n",
        encoding="utf-8",
    )
    assert load_rules(path).sla.policies[0].business is False


def test_sweeper_without_relay_sends_nothing(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    app = make_app(db_url, tmp_path, clock)
    try:
        deliver(app, make_mail())
        quiet = Sweeper(
            app.db, clock, app.sla, app.sweeper.templates, None, app.sweeper.identity, b"k"
        )  # type: ignore[union-attr, arg-type]
        clock.advance(timedelta(days=1))
        assert quiet.run() == 0
        assert mails(app, "sla-breach") == []
    finally:
        app.db.dispose()


def test_rules_check_names_missing_sla_templates_and_leads(tmp_path: Path) -> None:
    from daemon.admin import rules_problems

    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\ncalendars:\n  office: {timezone: UTC, always_open: true}\n"
        "sla:\n  calendar: office\n  from: sla@acme.example\n  notify_template: escalate\n"
        "  leads: {billing: billing-lead@acme.example}\n"
        "  survey: {enabled: true, template: nps, from: support@acme.example}\n"
        "  policies:\n    - {name: p, first_response: 1h}\n",
        encoding="utf-8",
    )
    settings = settings_for("sqlite://", paths={"templates": str(ROOT / "templates")})
    problems = rules_problems(load_rules(path), settings)
    assert any("templates/notifications/escalate-warning/" in p for p in problems)
    assert any("templates/notifications/escalate-breach/" in p for p in problems)
    assert any("templates/surveys/nps/" in p for p in problems)
    assert any(p.startswith("sla.leads: no `default` lead") for p in problems)
    assert rules_problems(load_rules(ROOT / "rules.yaml"), settings) == []


def test_sla_commands_resolve_show_and_report(tmp_path: Path, clock: FrozenClock) -> None:
    from tests.test_cli import mailcare

    db_url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    from daemon.database import Database

    Database(db_url).upgrade()
    app = make_app(db_url, tmp_path, clock)
    deliver(app, make_mail())
    app.db.dispose()
    config = tmp_path / "mailcare.yaml"
    config.write_text(
        f"database_url: {db_url}\n"
        f"paths: {{rules: {tmp_path / 'rules.yaml'}, templates: {ROOT / 'templates'}}}\n"
        "relay: {enabled: true, host: 127.0.0.1, port: 2525, tls: none}\n",
        encoding="utf-8",
    )
    shown = json.loads(mailcare("sla", "show", "MC#1", "--json", config=config).stdout)
    assert shown["status"] == "open" and shown["policy"] == "standard"
    assert [e["kind"] for e in shown["events"]] == ["opened"]
    assert "now paused" in mailcare("sla", "pause", "1", config=config).stdout
    assert "now open" in mailcare("sla", "resume", "[MC#1]", config=config).stdout
    done = mailcare("sla", "resolve", "<m1@customer.example>", "--note", "fixed", config=config)
    assert "now resolved" in done.stdout
    shown = json.loads(mailcare("sla", "show", "MC#1", "--json", config=config).stdout)
    assert [e["kind"] for e in shown["events"]] == ["opened", "paused", "resumed", "resolved"]
    assert shown["events"][-1]["detail"] == "fixed" and shown["events"][-1]["source"] == "command"
    missing = mailcare("sla", "show", "MC#99", config=config, check=False)
    assert missing.returncode == 1 and "no SLA clock" in missing.stderr
    report = json.loads(
        mailcare("sla", "report", "--since", "2026-01-01", "--format", "json", config=config).stdout
    )
    assert report["total"]["conversations"] == 1
    assert report["total"]["resolution"]["done"] == 1
    html = tmp_path / "sla.html"
    mailcare("sla", "report", "--format", "html", "--output", str(html), config=config)
    assert "<svg" in html.read_text(encoding="utf-8")
    check = Database(db_url)
    with check.reading() as conn:
        kinds = conn.execute(select(OUTBOX.c.kind).order_by(OUTBOX.c.id)).scalars().all()
    check.dispose()
    assert kinds == ["auto-reply", "survey"]


def test_the_policy_follows_the_classification_decided_in_the_same_batch(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES % {"first": "120"}
        + "routing:\n  overrides:\n"
        + "    - {name: invoices, when: {subject: invoice},"
        + " department: billing, urgency: important}\n",
        encoding="utf-8",
    )
    rules.write_text(
        rules.read_text(encoding="utf-8").replace(
            "  policies:\n",
            "  policies:\n    - {name: billing-fast, when: {departments: [billing]},"
            " first_response: 30, resolution: 4h}\n",
        ),
        encoding="utf-8",
    )
    settings = settings_for(
        db_url,
        paths={
            "rules": str(rules),
            "templates": str(ROOT / "templates"),
            "models": str(ROOT / "models"),
        },
        relay={"enabled": True, "host": "127.0.0.1", "port": 2525, "tls": "none"},
        runner={
            "idle_wait": 0.05,
            "processes": 1,
            "steps": [*STEPS[:4], "classify", "sla", "reply"],
        },
    )
    app = build_app(settings, clock=clock, intake=False, sender=False)
    try:
        deliver(app, make_mail(subject="Wrong invoice amount"))
        deliver(app, make_mail(subject="Printer broken", message_id="<m2@customer.example>"))
        with app.db.reading() as conn:
            rows = conn.execute(
                select(CLOCKS.c.policy, CLOCKS.c.department, CLOCKS.c.urgency).order_by(
                    CLOCKS.c.conversation_id
                )
            ).all()
        assert rows[0] == ("billing-fast", "billing", "important")
        assert rows[1].policy == "standard"
    finally:
        app.db.dispose()


def test_status_counts_open_paused_and_overdue_clocks(app: App, clock: FrozenClock) -> None:
    from daemon.status import collect, render

    deliver(app, make_mail())
    deliver(app, make_mail(subject="Second", message_id="<m2@customer.example>"))
    assert collect(app.db, clock).sla == {"open": 2, "paused": 0, "overdue": 0}
    conversation = clock_row_of(app, "<m2@customer.example>")
    assert app.sla is not None
    with app.db.transaction() as conn:
        app.sla.record(conn, [NewEvent("p", conversation, "paused", clock.now(), "command")])
    clock.advance(timedelta(hours=3))  # past the first response of the open one
    status = collect(app.db, clock)
    assert status.sla == {"open": 1, "paused": 1, "overdue": 1}
    assert "sla: 1 open, 1 paused, 1 overdue" in render(status)


def clock_row_of(app: App, message_id: str) -> int:
    with app.db.reading() as conn:
        return int(
            conn.execute(
                select(Message.conversation_id).where(Message.message_id == message_id)
            ).scalar_one()
        )


def test_two_daemons_sweeping_at_once_announce_each_breach_once(
    app: App, clock: FrozenClock, db_url: str, tmp_path: Path
) -> None:
    import threading

    for n in range(30):
        deliver(
            app,
            make_mail(
                subject=f"Request {n}",
                sender=f"Customer {n} <c{n}@customer.example>",
                message_id=f"<r{n}@customer.example>",
            ),
        )
    clock.advance(timedelta(hours=20))  # every first response breached, nothing else due
    other = make_app(db_url, tmp_path, clock)
    start = threading.Barrier(2)
    queued: list[int] = []

    def sweep_with(sweeper: Sweeper | None) -> None:
        assert sweeper is not None
        start.wait()
        queued.append(sweeper.run())

    threads = [threading.Thread(target=sweep_with, args=(a.sweeper,)) for a in (app, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    other.db.dispose()
    assert sorted(queued)[-1] > 0 and sum(queued) == 30
    breaches = mails(app, "sla-breach")
    assert len(breaches) == 30
    assert len({m["Message-ID"] for m in breaches}) == 30


def test_a_broken_notification_template_is_retried_once_fixed(
    app: App, clock: FrozenClock, tmp_path: Path
) -> None:
    import shutil

    from daemon.render import TemplateStore

    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    breach = templates / "notifications" / "sla-breach" / "default.txt"
    good = breach.read_text(encoding="utf-8")
    breach.write_text("Subject: {{ no_such_variable }}\n\nbroken\n", encoding="utf-8")
    assert app.sweeper is not None
    sweeper = Sweeper(
        app.db,
        clock,
        app.sla,  # type: ignore[arg-type]
        TemplateStore(templates),
        app.outbox,
        app.sweeper.identity,
        b"key",
    )
    deliver(app, make_mail())
    clock.advance(timedelta(hours=20))
    assert sweeper.run() == 0 and mails(app, "sla-breach") == []
    breach.write_text(good, encoding="utf-8")
    assert sweeper.run() == 0  # not before the retry time
    clock.advance(timedelta(minutes=5))
    assert sweeper.run() == 1
    assert len(mails(app, "sla-breach")) == 1
