"""Campaign delivery on SQLite and PostgreSQL, to a real SMTP sink: each recipient once."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, insert, select, update

from daemon.app import build_campaign_sender, build_identity
from daemon.campaign_config import CampaignDefinition, Schedule, load_definitions
from daemon.campaign_ledger import RUNS, SENDS
from daemon.campaign_send import CampaignSender
from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.errors import ConfigError
from daemon.keys import instance_key
from daemon.render import TemplateStore
from daemon.rules import Rules, RulesFile
from daemon.sink import SmtpSink
from daemon.suppressions import list_scope, suppress, suppressed
from daemon.tables import ListMember, Subscriber, Throttle
from daemon.unsubscribe import read_token
from tests.helpers import settings_for, wait_until

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
_BUILDS = itertools.count()
SUBSCRIBERS: Table = Subscriber.__table__  # type: ignore[assignment]
MEMBERS: Table = ListMember.__table__  # type: ignore[assignment]
THROTTLES: Table = Throttle.__table__  # type: ignore[assignment]

TEXT = """Subject: {{ campaign.name | title }} for {{ subscriber.name or "you" }}

Hello {{ subscriber.name or "there" }}, your code is {{ coupon }}.
Unsubscribe: {{ unsubscribe_url }}
"""
HTML = "<p>Hello <b>{{ subscriber.name or 'there' }}</b>, code {{ coupon }}.</p>"
ZH = """Subject: 十二月优惠

{{ subscriber.name }}，您好！优惠码 {{ coupon }}。
"""


def marketing_rules(**marketing: Any) -> Rules:
    """Rules with a newsletter list, a VIP segment and a fast throttle."""
    section: dict[str, Any] = {
        "from": "Example News <news@example.com>",
        "unsubscribe_address": "unsubscribe@example.com",
        "lists": {"news": {"title": "Example News", "double_opt_in": False}},
        "segments": {"vip": {"tiers": ["vip"]}},
        "throttle": {"per_second": 10000, "burst": 10000},
        "connections": 2,
        "batch": 20,
    }
    section.update(marketing)
    return Rules.model_validate({"marketing": section})


def templates_in(root: Path) -> Path:
    """A campaign template `december` with a text, an HTML and a Chinese variant."""
    folder = root / "campaigns" / "december"
    folder.mkdir(parents=True)
    (folder / "default.txt").write_text(TEXT, encoding="utf-8")
    (folder / "default.html").write_text(HTML, encoding="utf-8")
    (folder / "zh.txt").write_text(ZH, encoding="utf-8")
    return root


def add_subscribers(db: Database, count: int, list_name: str = "news", **extra: Any) -> None:
    """count subscribed members, every third a VIP, every fifth Chinese-speaking."""
    now = START - timedelta(days=30)
    with db.transaction() as conn:
        conn.execute(
            insert(SUBSCRIBERS),
            [
                {
                    "address": f"person{n:05d}@example.org",
                    "name": f"Person {n}",
                    "language": "zh" if n % 5 == 0 else "en",
                    "tier": "vip" if n % 3 == 0 else "ordinary",
                    "tags": "[]",
                    "attributes": "{}",
                    "created_at": now,
                    "updated_at": now,
                    **extra,
                }
                for n in range(count)
            ],
        )
        ids = conn.execute(select(SUBSCRIBERS.c.id)).scalars().all()
        conn.execute(
            insert(MEMBERS),
            [
                {
                    "list": list_name,
                    "subscriber_id": pk,
                    "status": "subscribed",
                    "consent_source": "test",
                    "consent_at": now,
                    "created_at": now,
                }
                for pk in ids
            ],
        )


class Harness:
    """A campaign sender wired to a database, a sink and a frozen clock."""

    def __init__(self, db_url: str, tmp_path: Path, sink: SmtpSink, rules: Rules) -> None:
        self.settings = settings_for(
            db_url,
            relay={"enabled": True, "host": "127.0.0.1", "port": sink.port, "tls": "none"},
            http={"enabled": True, "port": 0, "public_url": "https://news.example.com/mc"},
            paths={"templates": str(templates_in(tmp_path / "templates"))},
        )
        self.db = Database(db_url)
        self.clock = FrozenClock(START)
        self.rules_file = RulesFile(tmp_path / "absent-rules.yaml", rules)
        self.sink = sink
        self.sender = self.build()
        self.book = self.sender.book

    def build(self) -> CampaignSender:
        identity = build_identity(self.settings, self.rules_file.current, self.db)
        return build_campaign_sender(
            self.settings,
            self.rules_file,
            self.db,
            self.clock,
            f"test:{id(self)}:{next(_BUILDS)}",
            TemplateStore(self.settings.paths.templates),
            identity,
            instance_key(self.db, "message-id"),
        )

    def campaign(self, **values: Any) -> CampaignDefinition:
        data: dict[str, Any] = {
            "name": "december",
            "list": "news",
            "template": "december",
            "variables": {"coupon": "XMAS26"},
        }
        data.update(values)
        definition = CampaignDefinition.model_validate(data)
        self.book.save(definition, schedule=True)
        return definition

    def sends(self) -> Counter[str]:
        with self.db.reading() as conn:
            rows = conn.execute(select(SENDS.c.state, func.count()).group_by(SENDS.c.state))
            return Counter({state: int(count) for state, count in rows})

    def run_status(self) -> str:
        with self.db.reading() as conn:
            return str(conn.execute(select(RUNS.c.status).order_by(RUNS.c.id.desc())).scalar())

    def send_all(self, expected_status: str = "finished") -> None:
        self.sender.start()
        try:
            wait_until(lambda: self.run_status() == expected_status, 60, expected_status)
        finally:
            self.sender.stop()


@pytest.fixture
def harness(db_url: str, tmp_path: Path, smtp_sink: SmtpSink) -> Any:
    made = Harness(db_url, tmp_path, smtp_sink, marketing_rules())
    yield made
    made.db.dispose()


def content(message: EmailMessage, kind: str) -> str:
    """The text of the message's plain or html body."""
    part = message.get_body((kind,))
    assert part is not None, f"no {kind} part"
    return str(part.get_content())


def received(sink: SmtpSink) -> list[EmailMessage]:
    return [message_from_bytes(m.data, policy=policy.default) for m in sink.messages]


def test_each_recipient_gets_one_personalised_copy(harness: Harness) -> None:
    add_subscribers(harness.db, 60)
    harness.campaign()
    started = harness.book.start_due()
    assert [(s.campaign, s.status, s.recipients) for s in started] == [("december", "running", 60)]
    harness.send_all()
    messages = received(harness.sink)
    to = Counter(m["To"].addresses[0].addr_spec for m in messages)
    assert len(to) == 60 and set(to.values()) == {1}
    assert harness.sends() == Counter({"sent": 60})
    with harness.db.reading() as conn:
        stored = dict(conn.execute(select(SENDS.c.address, SENDS.c.message_id)).all())
    key = instance_key(harness.db, "unsubscribe")
    for message in messages:
        address = message["To"].addresses[0].addr_spec
        assert message["Message-ID"] == f"<{stored[address]}>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        links = message["List-Unsubscribe"]
        assert "<https://news.example.com/mc/unsubscribe/mcu-" in links
        assert "<mailto:unsubscribe@example.com?subject=unsubscribe%20mcu-" in links
        token = links.split("/unsubscribe/")[1].split(">")[0]
        found = read_token(key, token)
        assert found is not None and found.list_name == "news"
        assert message["List-Id"] == "Example News <news.example.com>"
        assert message["Precedence"] == "bulk"
        number = int(address[6:11])
        if number % 5 == 0:
            assert message["Subject"] == "十二月优惠"
            assert f"Person {number}，您好" in content(message, "plain")
        else:
            assert message["Subject"] == f"December for Person {number}"
            html = content(message, "html")
            assert f"<b>Person {number}</b>, code XMAS26" in html
            text = content(message, "plain")
            assert "/unsubscribe/mcu-" in text
    assert {m.mail_from for m in harness.sink.messages} == {"news@example.com"}


def test_segment_and_suppressions_shape_the_frozen_audience(harness: Harness) -> None:
    add_subscribers(harness.db, 30)
    with harness.db.transaction() as conn:
        suppress(conn, [("person00003@example.org", "hard-bounce", None, None)], START)
        suppress(conn, [("person00006@example.org", "complaint", None, None)], START, "marketing")
        suppress(
            conn,
            [("person00009@example.org", "unsubscribe", None, None)],
            START,
            list_scope("news"),
        )
        suppress(
            conn,
            [("person00012@example.org", "unsubscribe", None, None)],
            START,
            list_scope("offers"),
        )
    harness.campaign(segment="vip")
    [started] = harness.book.start_due()
    assert (started.recipients, started.excluded) == (7, 3)  # 10 VIPs, 3 suppressed here
    harness.send_all()
    to = sorted(m["To"].addresses[0].addr_spec for m in received(harness.sink))
    assert "person00012@example.org" in to
    assert not {"person00003@example.org", "person00006@example.org"} & set(to)
    assert len(to) == 7


def test_a_second_start_of_the_same_occurrence_is_impossible(harness: Harness) -> None:
    add_subscribers(harness.db, 10)
    harness.campaign()
    assert len(harness.book.start_due()) == 1
    # a second process that read the old campaign row tries to start the same occurrence
    with harness.db.transaction() as conn:
        from daemon.campaign_ledger import CAMPAIGNS

        conn.execute(
            update(CAMPAIGNS).values(state="scheduled", next_run_at=START, next_occurrence=None)
        )
        occurrence = conn.execute(select(RUNS.c.occurrence)).scalar_one()
        conn.execute(update(CAMPAIGNS).values(next_occurrence=occurrence))
    assert harness.book.start_due() == []
    assert sum(harness.sends().values()) == 10


def test_pause_resume_and_cancel_never_send_twice(harness: Harness) -> None:
    add_subscribers(harness.db, 40)
    harness.campaign()
    harness.book.start_due()
    harness.book.pause("december")
    harness.sender.start()
    try:
        harness.clock.advance(5)
        harness.sender.housekeeping(force=True)
        assert harness.sink.count == 0
        harness.book.resume("december")
        harness.sender.wake()
        wait_until(lambda: harness.run_status() == "finished", 30, "finished")
    finally:
        harness.sender.stop()
    assert harness.sink.count == 40
    harness.book.resume("december")
    assert harness.book.retry_failed("december") == 0
    assert len({m.rcpt_tos for m in harness.sink.messages}) == 40


def test_cancel_leaves_the_rest_cancelled(harness: Harness) -> None:
    add_subscribers(harness.db, 15)
    harness.campaign()
    harness.book.start_due()
    assert harness.book.cancel("december") == 15
    assert harness.run_status() == "cancelled"
    harness.sender.start()
    harness.sender.stop()
    assert harness.sink.count == 0


def test_deferrals_retry_later_and_slow_the_throttle(harness: Harness) -> None:
    add_subscribers(harness.db, 5)
    harness.sink.fail_next(2, 451, "RCPT")
    harness.campaign(retry_after=60)
    harness.book.start_due()
    harness.sender.start()
    try:
        wait_until(lambda: harness.sends()["sent"] == 3, 20, "three sent")
        wait_until(lambda: harness.sends()["queued"] == 2, 20, "two deferred")
        with harness.db.reading() as conn:
            bucket = conn.execute(select(THROTTLES)).one()
        assert bucket.deferrals >= 1 and bucket.rate <= 5000
        assert harness.run_status() == "running"
        harness.clock.advance(61)
        harness.sender.wake()
        wait_until(lambda: harness.run_status() == "finished", 20, "finished")
    finally:
        harness.sender.stop()
    assert harness.sends() == Counter({"sent": 5})
    assert len(harness.sink.messages) == 5


def test_a_dead_mailbox_fails_and_is_suppressed(harness: Harness) -> None:
    add_subscribers(harness.db, 4)
    harness.sink.fail_next(1, "550 5.1.1 No such user", "RCPT")
    harness.campaign()
    harness.book.start_due()
    harness.send_all("finished_with_failures")
    assert harness.sends() == Counter({"sent": 3, "failed": 1})
    with harness.db.reading() as conn:
        failed = conn.execute(select(SENDS.c.address).where(SENDS.c.state == "failed")).scalar_one()
        assert suppressed(conn, [failed]) == {failed: "hard-bounce"}
    assert harness.book.retry_failed("december") == 0  # suppressed since: not retried
    assert harness.sink.count == 3


def test_a_lost_reply_is_uncertain_and_not_resent(harness: Harness) -> None:
    add_subscribers(harness.db, 3)
    harness.sink.hang_next(1, 3.0)
    harness.settings.relay.__dict__["timeout"] = 1.0
    harness.sender = harness.build()
    harness.campaign()
    harness.book.start_due()
    harness.send_all("finished_with_failures")
    states = harness.sends()
    assert states["uncertain"] == 1 and states["sent"] == 2
    assert harness.book.retry_failed("december") == 0
    assert harness.book.retry_failed("december", uncertain=True) == 1


def test_crashed_claims_go_back_and_sending_rows_become_uncertain(harness: Harness) -> None:
    add_subscribers(harness.db, 6)
    harness.campaign()
    harness.book.start_due()
    dead = "otherhost:1:dead"
    with harness.db.transaction() as conn:
        ids = conn.execute(select(SENDS.c.id).order_by(SENDS.c.id)).scalars().all()
        lease = START - timedelta(seconds=1)
        conn.execute(
            update(SENDS)
            .where(SENDS.c.id.in_(ids[:2]))
            .values(state="claimed", claimed_by=dead, lease_until=lease, attempts=1)
        )
        conn.execute(
            update(SENDS)
            .where(SENDS.c.id == ids[2])
            .values(state="sending", claimed_by=dead, lease_until=lease, attempts=1)
        )
    assert harness.sender.ledger.recover() == (2, 1)
    harness.send_all("finished_with_failures")
    assert harness.sends() == Counter({"sent": 5, "uncertain": 1})
    assert harness.sink.count == 5


def test_late_start_skips_an_occurrence_and_plans_the_next(harness: Harness) -> None:
    add_subscribers(harness.db, 3)
    harness.campaign(
        schedule=Schedule(
            at=datetime(2026, 11, 1, 9, 0),
            timezone="Europe/Berlin",
            repeat="monthly",
            late_start=6 * 3600,
        )
    )
    started = harness.book.start_due()
    assert [s.status for s in started] == ["skipped"]
    [status] = harness.book.status("december")
    assert status["next_occurrence"] == "2026-12-01T09:00"
    harness.clock.advance(3600)  # 09:00 Berlin is 08:00 UTC
    [second] = harness.book.start_due()
    assert (second.status, second.recipients) == ("running", 3)


def test_local_time_sends_at_each_recipients_morning(harness: Harness) -> None:
    add_subscribers(harness.db, 2)
    with harness.db.transaction() as conn:
        conn.execute(
            update(SUBSCRIBERS)
            .where(SUBSCRIBERS.c.address == "person00000@example.org")
            .values(timezone="Asia/Shanghai")
        )
        conn.execute(
            update(SUBSCRIBERS)
            .where(SUBSCRIBERS.c.address == "person00001@example.org")
            .values(timezone="America/New_York")
        )
    set_clock(harness.clock, datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    harness.campaign(
        schedule=Schedule(at=datetime(2026, 12, 1, 9, 0), timezone="UTC", local_time=True)
    )
    [started] = harness.book.start_due()
    assert started.recipients == 2
    with harness.db.reading() as conn:
        due = dict(conn.execute(select(SENDS.c.address, SENDS.c.due_at)).all())
    assert due["person00000@example.org"] == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    assert due["person00001@example.org"] == datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    set_clock(harness.clock, datetime(2026, 12, 1, 1, 0, 30, tzinfo=UTC))
    harness.sender.start()
    try:
        harness.sink.wait_for(1)
        assert harness.sends()["queued"] == 1
        set_clock(harness.clock, datetime(2026, 12, 1, 14, 0, 30, tzinfo=UTC))
        harness.sender.wake()
        wait_until(lambda: harness.run_status() == "finished", 20, "finished")
    finally:
        harness.sender.stop()


def test_a_broken_template_pauses_the_run_and_loses_nothing(harness: Harness) -> None:
    add_subscribers(harness.db, 5)
    folder = Path(harness.settings.paths.templates) / "campaigns" / "december"
    for name in ("default.txt", "zh.txt"):
        (folder / name).write_text("Subject: {{ missing.value }}\n\nx\n", encoding="utf-8")
    harness.sender = harness.build()
    harness.campaign()
    harness.book.start_due()
    harness.sender.start()
    try:
        wait_until(lambda: harness.run_status() == "paused", 20, "paused")
    finally:
        harness.sender.stop()
    assert harness.sink.count == 0
    assert harness.sends() == Counter({"queued": 5})
    (folder / "default.txt").write_text(TEXT, encoding="utf-8")
    (folder / "zh.txt").write_text(ZH, encoding="utf-8")
    harness.sender = harness.build()
    harness.book.resume("december")
    harness.send_all()
    assert harness.sink.count == 5


def test_the_throttle_keeps_its_pace_across_restarts(
    db_url: str, tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    rules = marketing_rules(throttle={"per_second": 2, "burst": 4})
    harness = Harness(db_url, tmp_path, smtp_sink, rules)
    try:
        add_subscribers(harness.db, 10)
        harness.campaign()
        harness.book.start_due()
        harness.sender.start()
        smtp_sink.wait_for(4)
        harness.sender.stop()
        assert smtp_sink.count == 4  # the burst; the frozen clock adds no tokens
        harness.sender = harness.build()  # a restarted process does not get a new burst
        harness.sender.start()
        harness.sender.housekeeping(force=True)
        harness.sender.wake()
        with harness.db.reading() as conn:
            assert conn.execute(select(THROTTLES.c.tokens)).scalar_one() < 1
        harness.sender.stop()
        assert smtp_sink.count == 4
        harness.clock.advance(1.0)  # two more tokens
        harness.sender = harness.build()
        harness.sender.start()
        smtp_sink.wait_for(6)
        harness.sender.stop()
        assert smtp_sink.count == 6
    finally:
        harness.db.dispose()


def test_campaign_files_are_validated_with_their_line(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "campaigns:\n"
        "  - name: winter\n    list: news\n    template: december\n"
        "    schedule: {at: 2026-12-01 09:00, timezone: Europe/Berlin, repeat: monthly}\n",
        encoding="utf-8",
    )
    [winter] = load_definitions(good)
    assert winter.schedule.repeat == "monthly"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: winter\nlist: news\ntemplate: december\nschedule:\n  timezone: Mars/Base\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_definitions(bad)
    assert "bad.yaml:5" in str(caught.value) and "Mars/Base" in str(caught.value)
    assert json.loads(winter.to_json())["from"] is None


def set_clock(clock: FrozenClock, moment: datetime) -> None:
    """Move the frozen clock to moment."""
    clock.advance(moment - clock.now())


def test_status_and_metrics_count_campaign_mail(harness: Harness) -> None:
    from urllib.request import urlopen

    from daemon.http import HttpServer, build_http_app
    from daemon.status import collect

    add_subscribers(harness.db, 8)
    with harness.db.transaction() as conn:
        suppress(conn, [("person00001@example.org", "complaint", None, None)], START, "marketing")
    harness.campaign()
    harness.book.start_due()
    assert collect(harness.db, harness.clock).campaigns["queued"] == 7
    harness.send_all()
    assert collect(harness.db, harness.clock).campaigns["sent"] == 0  # no run under way
    web = HttpServer(
        harness.settings.http,
        build_http_app(harness.db, harness.clock, b"k" * 32, lambda: harness.rules_file.current),
    )
    web.start()
    try:
        with urlopen(f"http://127.0.0.1:{web.port}/metrics", timeout=10) as answer:
            body = answer.read().decode()
    finally:
        web.stop()
    assert "mailcare_campaign_mail_sent_total 7.0" in body
    assert 'mailcare_campaign_recipients{state="sent"} 7.0' in body
    assert 'mailcare_campaign_runs{status="finished"} 1.0' in body
    assert 'mailcare_suppressed_addresses{reason="complaint",scope="marketing"} 1.0' in body
