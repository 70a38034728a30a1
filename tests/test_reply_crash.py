"""SIGKILL during a burst of 1,000 auto-replies: none lost, none sent twice, doubts reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from daemon.database import Database
from daemon.outbox import OUTBOX
from tests.helpers import make_mail, states, wait_until
from tests.servers.dovecot import Dovecot
from tests.servers.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parent.parent
REPLIES = 1000
KILLS = 3
SUPPORT = "support@acme.example"


def start(config: Path, password: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
            cwd=ROOT,
            env={**os.environ, "CRASH_TEST_PW": password},
            stdout=subprocess.DEVNULL,
            stderr=handle,
            start_new_session=True,
        )


def outbox_states(db: Database) -> dict[str, int]:
    with db.reading() as conn:
        rows = conn.execute(select(OUTBOX.c.state, func.count()).group_by(OUTBOX.c.state)).all()
    return {state: int(count) for state, count in rows}


@pytest.mark.slow
def test_sigkill_during_a_burst_of_auto_replies(
    dovecot: Dovecot, smtp_sink: SmtpSink, db_url: str, tmp_path: Path
) -> None:
    account = dovecot.account()
    dovecot.append_many(
        account,
        "INBOX",
        [
            make_mail(
                sender=f"Customer {n} <c{n}@customer.example>",
                to=SUPPORT,
                subject=f"Order {n} has not arrived",
                message_id=f"<burst{n}@customer.example>",
            )
            for n in range(REPLIES)
        ],
    )
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nauto_replies:\n  rules:\n"
        f"    - {{name: acknowledge, template: acknowledge, from: 'Acme <{SUPPORT}>'}}\n",
        encoding="utf-8",
    )
    config = tmp_path / "mailcare.yaml"
    config.write_text(
        f"database_url: {db_url}\n"
        "log_level: WARNING\n"
        f"paths: {{rules: rules.yaml, templates: {ROOT / 'templates'}}}\n"
        "runner: {batch_size: 100, processes: 2}\n"
        "leases: {ttl: 30, retry: 0.2}\n"
        f"relay: {{enabled: true, host: 127.0.0.1, port: {smtp_sink.port}, tls: none,\n"
        "         connections: 2, batch: 8, idle_wait: 0.05}\n"
        "mailboxes:\n"
        f"  - {{name: support, host: 127.0.0.1, port: {dovecot.imap_port}, tls: none,\n"
        f"     username: {account.username}, password: {{env: CRASH_TEST_PW}},\n"
        f"     address: {SUPPORT}, fetch_batch: 200, poll_interval: 0.5}}\n",
        encoding="utf-8",
    )
    db = Database(db_url)
    log = tmp_path / "daemon.log"
    try:
        kills_while_sending = 0
        for kill in range(KILLS):
            proc = start(config, account.password, log)
            # kill once this run has handed more replies to the relay
            target = smtp_sink.count + (REPLIES // (KILLS + 1)) // 2 + 50 * kill
            wait_until(
                lambda t=target: smtp_sink.count >= min(t, REPLIES), timeout=120, what="sending"
            )
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if outbox_states(db).get("sending", 0):
                kills_while_sending += 1
        assert kills_while_sending >= 1, "no kill landed while replies were being handed over"
        final = start(config, account.password, log)
        try:
            wait_until(
                lambda: (
                    states(db).get("done", 0) == REPLIES
                    and set(outbox_states(db)) <= {"sent", "uncertain"}
                    and sum(outbox_states(db).values()) == REPLIES
                ),
                timeout=180,
                what="every message answered after the crashes",
            )
        finally:
            final.send_signal(signal.SIGTERM)
            assert final.wait(60) == 0
        listed = subprocess.run(
            [
                *(sys.executable, "-m", "daemon.cli", "--config", str(config)),
                *("outbox", "list", "--state", "uncertain", "--json", "--limit", "1000"),
            ],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        report = json.loads(listed.stdout)
        with db.reading() as conn:
            all_ids = set(conn.execute(select(OUTBOX.c.message_id)).scalars())
    finally:
        db.dispose()
    time.sleep(0.2)
    delivered = [m.data for m in smtp_sink.messages]
    delivered_ids = [
        line.split(b"<", 1)[1].split(b">", 1)[0].decode()
        for raw in delivered
        for line in raw.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    ]
    uncertain_ids = {row["message_id"] for row in report["rows"]}
    assert len(all_ids) == REPLIES, "one auto-reply per customer message"
    assert len(delivered_ids) == len(set(delivered_ids)), "a reply was sent twice"
    assert set(delivered_ids) | uncertain_ids == all_ids, "a reply was lost"
    assert report["counts"].get("uncertain", 0) == len(uncertain_ids)
    # at most connections x batch rows are in flight when a process dies
    assert len(uncertain_ids) <= KILLS * 2 * 8
    print({"delivered": len(delivered_ids), "uncertain": len(uncertain_ids)})
