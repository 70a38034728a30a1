"""`mailcare campaign ...` through the real command line, against a real SMTP sink."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from pathlib import Path

from sqlalchemy import select

from daemon.campaign_ledger import RUNS
from daemon.database import Database
from daemon.sink import SmtpSink
from tests.test_admin import ROOT, mailcare
from tests.test_campaigns import add_subscribers

RULES = """
marketing:
  from: "Example News <news@example.com>"
  unsubscribe_address: unsubscribe@example.com
  lists:
    news: {title: Example News, double_opt_in: false}
  segments:
    vip: {tiers: [vip]}
  throttle: {per_second: 1000, burst: 1000}
"""

CAMPAIGN = """
name: december-news
list: news
template: newsletter
variables:
  headline: "What's new in December"
  intro: "Returns are now free for 60 days."
  link: "https://example.com/news/december"
"""


def setup(tmp_path: Path, db_url: str, sink: SmtpSink) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    (tmp_path / "december.yaml").write_text(CAMPAIGN, encoding="utf-8")
    config = tmp_path / "mailcare.yaml"
    config.write_text(
        f"database_url: {json.dumps(db_url)}\n"
        f"relay: {{enabled: true, host: 127.0.0.1, port: {sink.port}, tls: none}}\n"
        "http: {enabled: true, port: 0, public_url: 'https://news.example.com/mc'}\n"
        "paths:\n"
        f"  rules: {json.dumps(str(tmp_path / 'rules.yaml'))}\n"
        f"  templates: {json.dumps(str(ROOT / 'templates'))}\n",
        encoding="utf-8",
    )
    return config


def test_save_preview_test_send_and_send(tmp_path: Path, db_url: str, smtp_sink: SmtpSink) -> None:
    config = setup(tmp_path, db_url, smtp_sink)
    db = Database(db_url)
    add_subscribers(db, 12)
    saved = mailcare("campaign", "save", str(tmp_path / "december.yaml"), config=config)
    assert "saved december-news (draft)" in saved.stdout
    [status] = json.loads(mailcare("campaign", "status", "--json", config=config).stdout)
    assert (status["name"], status["state"], status["runs"]) == ("december-news", "draft", [])

    preview = mailcare(
        "campaign",
        "preview",
        "december-news",
        "--subscriber",
        "person00001@example.org",
        config=config,
    ).stdout
    assert "Subject: What's new in December" in preview
    assert "Dear Person 1," in preview
    assert "List-Unsubscribe: <https://news.example.com/mc/unsubscribe/mcu-" in preview
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in preview
    chinese = mailcare(
        "campaign",
        "preview",
        "december-news",
        "--subscriber",
        "person00005@example.org",
        config=config,
    ).stdout
    assert "Person 5，您好！" in chinese

    mailcare(
        "campaign",
        "test-send",
        "december-news",
        "--to",
        "marketer@example.net",
        "--subscriber",
        "person00001@example.org",
        config=config,
    )
    [test] = smtp_sink.messages
    assert test.rcpt_tos == ("marketer@example.net",)
    assert "Dear Person 1," in message_from_bytes(test.data, policy=policy.default).as_string()
    with db.reading() as conn:
        assert conn.execute(select(RUNS.c.id)).first() is None  # a test send is no run

    # due now, but only a daemon starts scheduled campaigns: `send` sends its own run
    mailcare(
        "campaign",
        "schedule",
        "--name",
        "other",
        "--list",
        "news",
        "--template",
        "newsletter",
        config=config,
    )
    sent = mailcare("campaign", "send", "december-news", "--no-progress", config=config)
    assert "december-news: finished" in sent.stdout
    recipients = sorted(r for m in smtp_sink.messages[1:] for r in m.rcpt_tos)
    assert recipients == [f"person{n:05d}@example.org" for n in range(12)]
    assert mailcare("campaign", "retry-failed", "december-news", config=config).stdout.endswith(
        "0 recipient(s) queued again\n"
    )
    table = mailcare("campaign", "status", "december-news", config=config).stdout
    assert "finished; 12 recipients, 0 suppressed; sent 12" in table
    [other] = json.loads(mailcare("campaign", "status", "other", "--json", config=config).stdout)
    assert (other["state"], other["runs"]) == ("scheduled", [])
    db.dispose()


def test_schedule_by_options_pause_resume_cancel(
    tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    config = setup(tmp_path, db_url, smtp_sink)
    out = mailcare(
        "campaign",
        "schedule",
        "--name",
        "vip-offer",
        "--kind",
        "promotion",
        "--list",
        "news",
        "--segment",
        "vip",
        "--template",
        "newsletter",
        "--at",
        "2030-01-15 09:00",
        "--timezone",
        "Asia/Shanghai",
        "--repeat",
        "monthly",
        config=config,
    ).stdout
    assert out.strip() == "vip-offer: starts at 2030-01-15T01:00:00+00:00"
    mailcare("campaign", "pause", "vip-offer", config=config)
    [paused] = json.loads(
        mailcare("campaign", "status", "vip-offer", "--json", config=config).stdout
    )
    assert paused["state"] == "paused" and paused["next_occurrence"] == "2030-01-15T09:00"
    mailcare("campaign", "resume", "vip-offer", config=config)
    mailcare("campaign", "cancel", "vip-offer", config=config)
    [cancelled] = json.loads(
        mailcare("campaign", "status", "vip-offer", "--json", config=config).stdout
    )
    assert cancelled["state"] == "cancelled" and cancelled["next_run_at"] is None
    refused = mailcare(
        "campaign",
        "schedule",
        "--name",
        "x",
        "--list",
        "nope",
        "--template",
        "newsletter",
        config=config,
        code=1,
    )
    assert "unknown list 'nope'" in refused.stderr
    assert smtp_sink.count == 0
