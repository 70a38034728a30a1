"""Campaign crash safety: a real `mailcare run` SIGKILLed at random moments while it sends.

Every recipient must get at most one copy; every recipient not marked `uncertain` must get
exactly one; and each kill may leave at most one `uncertain` recipient behind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from daemon.campaign_config import CampaignDefinition
from daemon.campaign_ledger import RUNS, SENDS
from daemon.campaigns import CampaignBook
from daemon.clock import SystemClock
from daemon.database import Database
from daemon.keys import instance_key
from daemon.rules import load_rules
from daemon.sink import SmtpSink
from tests.helpers import wait_until
from tests.test_campaigns import add_subscribers, templates_in

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = 20_000
KILLS = 10

RULES = """
marketing:
  from: "Example News <news@example.com>"
  unsubscribe_address: unsubscribe@example.com
  lists:
    news: {title: Example News, double_opt_in: false}
  throttle: {per_second: 100000, burst: 1000}
  connections: 4
  batch: 50
  lease: 20
"""


def write_config(tmp_path: Path, db_url: str, sink: SmtpSink) -> Path:
    """A daemon that only sends campaign mail (no mailboxes, no classifier); its runner
    processes, as by default, must leave the sending to the main process."""
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    templates_in(tmp_path / "templates")
    config = tmp_path / "mailcare.yaml"
    config.write_text(
        f"database_url: {db_url}\n"
        "log_level: WARNING\n"
        "runner: {processes: 2, steps: [parse, screen, thread, contact]}\n"
        f"relay: {{enabled: true, host: 127.0.0.1, port: {sink.port}, tls: none}}\n"
        f"paths: {{rules: {tmp_path / 'rules.yaml'}, templates: {tmp_path / 'templates'}}}\n",
        encoding="utf-8",
    )
    return config


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def schedule(db: Database, rules_path: Path) -> None:
    rules = load_rules(rules_path)
    book = CampaignBook(db, SystemClock(), lambda: rules, instance_key(db, "message-id"))
    book.save(
        CampaignDefinition.model_validate(
            {
                "name": "december",
                "list": "news",
                "template": "december",
                "variables": {"coupon": "XMAS26"},
            }
        ),
        schedule=True,
    )


def ledger(db: Database) -> dict[str, str]:
    with db.reading() as conn:
        return dict(conn.execute(select(SENDS.c.address, SENDS.c.state)).all())


def run_status(db: Database) -> str | None:
    with db.reading() as conn:
        return conn.execute(select(RUNS.c.status)).scalar()


def copies(sink: SmtpSink) -> Counter[str]:
    return Counter(rcpt for message in sink.messages for rcpt in message.rcpt_tos)


def check_exactly_once(db: Database, sink: SmtpSink, kills: int) -> Counter[str]:
    """The guarantees; returns the states for the report."""
    received = copies(sink)
    states = ledger(db)
    assert len(states) == RECIPIENTS
    doubled = {address: n for address, n in received.items() if n > 1}
    assert not doubled, f"{len(doubled)} recipients got more than one copy"
    by_state = Counter(states.values())
    assert set(by_state) <= {"sent", "uncertain"}, by_state
    missing = [a for a, state in states.items() if state == "sent" and received[a] != 1]
    assert not missing, f"{len(missing)} recipients marked sent got no copy"
    assert by_state["uncertain"] <= kills, by_state
    assert set(received) <= set(states)
    return by_state


@pytest.mark.slow
def test_sigkill_during_a_campaign_sends_nobody_two_copies(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sink = SmtpSink().start()
    request.addfinalizer(sink.stop)
    config = write_config(tmp_path, db_url, sink)
    db = Database(db_url)
    request.addfinalizer(db.dispose)
    add_subscribers(db, RECIPIENTS)
    schedule(db, tmp_path / "rules.yaml")
    rng = random.Random(20261123)
    kills_during_sending = 0
    for _ in range(KILLS):
        before = sink.count
        proc = start(config)

        def sending(start: int = before) -> bool:
            return sink.count > start or run_status(db) not in (None, "running")

        # kill once this process is sending, at a random moment of its work
        wait_until(sending, timeout=90, what="the restarted daemon to send")
        time.sleep(rng.uniform(0.0, 1.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if run_status(db) == "running":
            kills_during_sending += 1
    assert kills_during_sending >= KILLS - 1, "the campaign ended before the kills"
    final = start(config)
    try:
        wait_until(
            lambda: run_status(db) in ("finished", "finished_with_failures"),
            timeout=300,
            what="the campaign to finish after the crashes",
        )
    finally:
        final.send_signal(signal.SIGTERM)
        assert final.wait(60) == 0
    by_state = check_exactly_once(db, sink, KILLS)
    expected = "finished_with_failures" if by_state["uncertain"] else "finished"
    assert run_status(db) == expected
    print(f"\n{db.engine.dialect.name}: {dict(by_state)} after {KILLS} kills")


@pytest.mark.slow
def test_two_daemons_on_postgresql_send_one_campaign_once(
    pg_databases: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from daemon.database import upgrade

    url = pg_databases.create_from("schema", upgrade)
    sink = SmtpSink().start()
    request.addfinalizer(sink.stop)
    config = write_config(tmp_path, url, sink)
    db = Database(url)
    request.addfinalizer(db.dispose)
    add_subscribers(db, 6000)
    schedule(db, tmp_path / "rules.yaml")
    first, second = start(config), start(config)
    try:
        wait_until(
            lambda: run_status(db) in ("finished", "finished_with_failures"),
            timeout=300,
            what="the campaign to finish",
        )
    finally:
        for proc in (first, second):
            proc.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0 and second.wait(60) == 0
    received = copies(sink)
    assert len(received) == 6000 and set(received.values()) == {1}
    with db.reading() as conn:
        owners = conn.execute(
            select(SENDS.c.claimed_by, func.count()).group_by(SENDS.c.claimed_by)
        ).all()
        runs = conn.execute(select(func.count()).select_from(RUNS)).scalar_one()
    assert runs == 1
    # both daemons took part: each claimed a share of the recipients
    assert len(owners) == 2 and min(count for _, count in owners) > 0, owners
    assert Counter(ledger(db).values()) == Counter({"sent": 6000})
