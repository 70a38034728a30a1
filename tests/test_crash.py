"""Crash safety: a real `mailcare run` SIGKILLed at random moments loses and doubles nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from daemon.database import Database
from daemon.demo_mail import variants
from daemon.tables import Contact, Conversation, Delivery, MailFolder, Message
from tests.helpers import states, wait_until
from tests.servers.dovecot import Dovecot

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 2000
KILLS = 10


def start(config: Path, password: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
        cwd=ROOT,
        env={**os.environ, "CRASH_TEST_PW": password},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def lease_holder(db: Database) -> str | None:
    with db.reading() as conn:
        return conn.execute(
            select(MailFolder.lease_owner).where(MailFolder.folder == "INBOX")
        ).scalar()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    dovecot: Dovecot, db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    account = dovecot.account()
    raws = variants(MESSAGES)
    dovecot.append_many(account, "INBOX", raws)
    config = tmp_path / "mailcare.yaml"
    config.write_text(
        f"database_url: {db_url}\n"
        "log_level: WARNING\n"
        # ten quick kills can land in the same batch more than max_attempts times; the
        # guard against messages that crash the runner is tested elsewhere (test_runner)
        "runner: {batch_size: 50, processes: 2, max_attempts: 50}\n"
        "leases: {ttl: 30, retry: 0.2}\n"
        "mailboxes:\n"
        f"  - {{name: support, host: 127.0.0.1, port: {dovecot.imap_port}, tls: none,\n"
        f"     username: {account.username}, password: {{env: CRASH_TEST_PW}},\n"
        "     fetch_batch: 100, poll_interval: 0.5}\n"
    )
    db = Database(db_url)
    request.addfinalizer(db.dispose)
    rng = random.Random(20261122)
    progress = []

    def work_seen() -> int:
        current = states(db)
        return sum(current.values()) + current.get("done", 0)

    for _ in range(KILLS):
        before = work_seen()
        proc = start(config, account.password)
        # kill at a random moment once this process has started working (storing or
        # processing), so that kills land in fetches, commits and batches, not in start-up
        wait_until(
            lambda start=before: work_seen() > start or work_seen() >= 2 * MESSAGES,
            timeout=60,
            what="the restarted daemon to make progress",
        )
        time.sleep(rng.uniform(0.0, 0.1))
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and its runner processes
        proc.wait()
        progress.append(states(db))
    # at least some kills must have landed while work was under way
    # most kills must interrupt unfinished work: a fetch, a store or a batch under way
    unfinished = [p for p in progress if p.get("done", 0) < MESSAGES]
    assert len(unfinished) >= KILLS // 2, progress
    final = start(config, account.password)
    try:
        wait_until(
            lambda: f":{final.pid}:" in (lease_holder(db) or ""),
            timeout=60,
            what="the last daemon to take the folder",
        )
        wait_until(
            lambda: states(db).get("done", 0) + states(db).get("quarantined", 0) == MESSAGES,
            timeout=180,
            what="all messages processed after the crashes",
        )
    finally:
        final.send_signal(signal.SIGTERM)
        assert final.wait(60) == 0
    with db.reading() as conn:
        total = conn.execute(select(func.count()).select_from(Message)).scalar_one()
        distinct = conn.execute(select(func.count(func.distinct(Message.message_id)))).scalar_one()
        uids = conn.execute(select(func.count(func.distinct(Delivery.uid)))).scalar_one()
        threaded = conn.execute(select(func.sum(Conversation.message_count))).scalar_one()
        by_contact = conn.execute(select(func.sum(Contact.message_count))).scalar_one()
        unthreaded = conn.execute(
            select(func.count()).select_from(Message).where(Message.conversation_id.is_(None))
        ).scalar_one()
    assert states(db) == {"done": MESSAGES}  # 0 lost, nothing quarantined
    assert total == distinct == uids == MESSAGES  # 0 duplicates, every UID seen once
    assert threaded == by_contact == MESSAGES  # no count doubled by a re-run batch
    assert unthreaded == 0


@pytest.mark.slow
def test_two_daemons_on_postgresql_share_a_folder(
    dovecot: Dovecot, pg_databases: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from daemon.database import upgrade

    url = pg_databases.create_from("schema", upgrade)
    account = dovecot.account()
    dovecot.append_many(account, "INBOX", variants(1000))
    config = tmp_path / "mailcare.yaml"
    config.write_text(
        f"database_url: {url}\n"
        "log_level: WARNING\n"
        "runner: {batch_size: 50, processes: 1}\n"
        "leases: {ttl: 3, retry: 0.2}\n"
        "mailboxes:\n"
        f"  - {{name: support, host: 127.0.0.1, port: {dovecot.imap_port}, tls: none,\n"
        f"     username: {account.username}, password: {{env: CRASH_TEST_PW}},\n"
        "     fetch_batch: 50, poll_interval: 0.5}\n"
    )
    db = Database(url)
    request.addfinalizer(db.dispose)
    first, second = start(config, account.password), start(config, account.password)
    try:
        holder = wait_until(lambda: lease_holder(db), what="one daemon to take the folder")
        owner, other = (first, second) if f":{first.pid}:" in holder else (second, first)
        wait_until(lambda: states(db).get("done", 0) >= 100, what="work under way")
        os.killpg(owner.pid, signal.SIGKILL)  # the folder's holder dies mid-sync ...
        owner.wait()
        # ... and the other daemon, on the same host, takes the folder over and finishes
        wait_until(
            lambda: f":{other.pid}:" in (lease_holder(db) or ""), timeout=30, what="the takeover"
        )
        wait_until(lambda: states(db) == {"done": 1000}, timeout=120, what="all processed")
        dovecot.lmtp_deliver(account, variants(1001)[-1])
        wait_until(lambda: states(db) == {"done": 1001}, what="new mail after the takeover")
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
    with db.reading() as conn:
        total = conn.execute(select(func.count()).select_from(Message)).scalar_one()
        distinct = conn.execute(select(func.count(func.distinct(Message.message_id)))).scalar_one()
    assert total == distinct == 1001
